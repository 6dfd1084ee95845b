from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError

from api import errors
from api.error_handlers import validation_error


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


class TestErrorTable:
    def test_every_error_class_has_a_row(self):
        missing = _all_subclasses(errors.AppError) - set(errors.ERROR_TABLE)
        assert not missing

    def test_codes_are_unique_snake_case(self):
        codes = [cls.code for cls in _all_subclasses(errors.AppError)]
        assert len(codes) == len(set(codes))
        assert all(code.replace("_", "").isalpha() and code.islower() for code in codes)

    @pytest.mark.parametrize(
        ("error", "status", "retry"),
        [
            (errors.InvalidRequest(), 400, "false"),
            (errors.AuthenticationFailed(), 401, "false"),
            (errors.BudgetExceeded(), 402, "false"),
            (errors.InsufficientScope(), 403, "false"),
            (errors.NotFound(), 404, "false"),
            (errors.Conflict(), 409, "true"),
            (errors.RateLimited(), 429, "true"),
            (errors.UpstreamError(), 502, "true"),
            (errors.UpstreamUnavailable(), 503, "true"),
            (errors.UpstreamTimeout(), 504, "true"),
        ],
    )
    def test_status_and_retry_header(self, error: errors.AppError, status: int, retry: str):
        assert error.status_code == status
        assert errors.error_headers(error)["x-should-retry"] == retry

    def test_budget_exceeded_has_no_retry_after(self):
        assert "retry-after" not in errors.error_headers(errors.BudgetExceeded())


class TestRendering:
    def test_openai_shape(self):
        body = errors.openai_body(errors.InvalidRequest("bad name", param="name"))
        assert body == {
            "error": {
                "message": "bad name",
                "type": "invalid_request_error",
                "code": "invalid_request",
                "param": "name",
            }
        }

    def test_anthropic_shape(self):
        body = errors.anthropic_body(errors.UpstreamUnavailable())
        assert body["type"] == "error"
        assert body["error"]["type"] == "overloaded_error"


class TestValidationErrors:
    def _convert(self, *items: dict[str, object]) -> errors.InvalidRequest:
        return validation_error(RequestValidationError(list(items)))

    def test_nested_location_becomes_param(self):
        err = self._convert(
            {"type": "literal_error", "loc": ("body", "limits", 0, "metric"), "msg": "Bad value"}
        )
        assert err.param == "limits[0].metric"
        assert err.message == "limits[0].metric: Bad value."

    def test_unknown_field(self):
        err = self._convert({"type": "extra_forbidden", "loc": ("body", "zzz"), "msg": "x"})
        assert (err.param, err.message) == ("zzz", "Unknown field: zzz.")

    def test_missing_body(self):
        err = self._convert({"type": "missing", "loc": ("body",), "msg": "Field required"})
        assert err.param is None
        assert "body is required" in err.message

    def test_query_parameter(self):
        err = self._convert({"type": "int_parsing", "loc": ("query", "limit"), "msg": "Bad int"})
        assert err.param == "limit"

    def test_value_error_prefix_is_dropped(self):
        err = self._convert(
            {
                "type": "value_error",
                "loc": ("body", "name"),
                "msg": "Value error, name cannot be null",
            }
        )
        assert err.message == "name: name cannot be null."
