from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class TollgateModel(BaseModel):
    """A response object. Fields Tollgate adds later are kept (`model_extra`), not refused."""

    model_config = ConfigDict(extra="allow")


class Deleted(TollgateModel):
    """What deleting a thread, tool or provider key answers."""

    object: str
    id: str | None = None
    deleted: bool
