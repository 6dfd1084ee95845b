"""Small helpers the pages share: a list's page size from the query string, JSON as people read
it, amounts in a currency's minor unit, and a form's fields through the API's own schema."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Query
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.error_handlers import validation_error
from api.errors import InvalidRequest
from api.kit.pagination import MAX_LIMIT

PAGE_SIZE = 50
# A list's `?cursor=`: as long as the API allows, so a pathological one is a 400 page.
Cursor = Annotated[str | None, Query(max_length=512)]


def page_limit(value: str | None) -> int:
    """`?limit=` as a page size: PAGE_SIZE when absent, else a whole number from 1 to MAX_LIMIT.
    Read as text so that a bad value is this page's 400, not the JSON API's."""
    if value is None or not value.strip():
        return PAGE_SIZE
    try:
        limit = int(value)
    except ValueError:
        raise InvalidRequest("limit: enter a whole number.", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit: from 1 to {MAX_LIMIT}.", param="limit")
    return limit


def pretty(value: Any) -> str:
    """JSON indented for reading (and editing), non-ASCII text kept as written."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def minor_units(amount: int | None, currency: str | None) -> str:
    """An amount in cents (every currency Tollgate bills in has two decimals) as `12.34 EUR`."""
    if amount is None:
        return "—"
    text = f"{Decimal(amount) / 100:,.2f}"
    return f"{text} {currency.upper()}" if currency else text


def validated(model: Any, data: dict[str, Any]) -> Any:
    """A form's fields through the API's own schema, its errors in the API's own words."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise validation_error(RequestValidationError(errors)) from None
