from __future__ import annotations

from typing import Any, Final


class NotGiven:
    """Marks an argument the caller did not pass, as distinct from an explicit None."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()


def given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if not isinstance(value, NotGiven)}
