"""The error tree, shaped like the official OpenAI and Anthropic SDKs'.

    TollgateError
    ├── APIError                      every failure of a call to Tollgate
    │   ├── APIStatusError            an error response; `status_code`, `code`, `param`
    │   │   ├── BadRequestError          400 invalid_request, invalid_model, …
    │   │   ├── AuthenticationError      401 invalid_api_key, missing_api_key
    │   │   ├── BudgetExceededError      402 budget_exceeded (a spending limit is reached)
    │   │   ├── PaymentRequiredError     402 payment_required (the key is suspended)
    │   │   ├── PermissionDeniedError    403 insufficient_scope, model_not_allowed, …
    │   │   ├── NotFoundError            404 not_found
    │   │   ├── ConflictError            409 conflict
    │   │   ├── RequestTooLargeError     413 request_too_large
    │   │   ├── UnprocessableEntityError 422
    │   │   ├── RateLimitError           429 rate_limited
    │   │   └── InternalServerError      5xx
    │   ├── APIStreamError            an `error` event inside a stream that had started
    │   └── APIConnectionError        no response (refused, reset, dropped)
    │       └── APITimeoutError       no response in time
    ├── JobTimeoutError               `jobs.wait()` gave up before the job finished
    └── WebhookVerificationError      `tollgate.webhooks.verify()` refused a delivery

Every `APIError` carries `request_id` (the `x-request-id` Tollgate answered with), `code`,
`param` and `type` when the server named them, and `status_code` when there was a response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tollgate.types.job import Job


class TollgateError(Exception):
    """The base of every error this package raises."""


class APIError(TollgateError):
    message: str
    request: httpx.Request | None
    body: Any
    """The decoded error body (a dict), its text when it is not JSON, or None."""
    code: str | None
    param: str | None
    type: str | None
    status_code: int | None
    request_id: str | None

    def __init__(
        self, message: str, *, request: httpx.Request | None = None, body: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.body = body
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        self.code = _str(error.get("code"))
        self.param = _str(error.get("param"))
        self.type = _str(error.get("type"))
        self.status_code = None
        self.request_id = None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class APIStatusError(APIError):
    """Tollgate answered with an error status."""

    response: httpx.Response
    status_code: int

    def __init__(self, message: str, *, response: httpx.Response, body: Any) -> None:
        super().__init__(message, request=response.request, body=body)
        self.response = response
        self.status_code = response.status_code
        self.request_id = response.headers.get("x-request-id")


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class BudgetExceededError(APIStatusError):
    """402 `budget_exceeded`: a spending, token or request limit of the key or its tenant is
    reached; nothing was sent to a provider. Not retried."""


class PaymentRequiredError(APIStatusError):
    """402 `payment_required`: the key is suspended because its Stripe invoice is unpaid."""


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class RequestTooLargeError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


class APIStreamError(APIError):
    """A stream that had started ended with an `error` event; `type` is the event's error type
    (`billing_error`, `rate_limit_error`, `overloaded_error`, `api_error`, …)."""

    def __init__(self, message: str, *, request: httpx.Request | None, body: Any) -> None:
        super().__init__(message, request=request, body=body)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            self.type = _str(body["error"].get("type"))


class APIConnectionError(APIError):
    def __init__(self, message: str = "Connection error.", *, request: httpx.Request) -> None:
        super().__init__(message, request=request)


class APITimeoutError(APIConnectionError):
    def __init__(self, request: httpx.Request) -> None:
        super().__init__("Request timed out.", request=request)


class JobTimeoutError(TollgateError):
    """`jobs.wait()` reached its timeout; `job` is the job as last seen (still running)."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"Job {job.id} is still {job.status} after {timeout:g} s.")
        self.job = job


class WebhookVerificationError(TollgateError):
    """A webhook delivery whose signature is missing, malformed, wrong or too old."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error(response: httpx.Response) -> APIStatusError:
    """The error class for a response, by status (and, for 402, by code)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text or None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    status = response.status_code
    cls: type[APIStatusError]
    if status == 402:
        code = error.get("code") if isinstance(error, dict) else None
        cls = BudgetExceededError if code == "budget_exceeded" else PaymentRequiredError
    elif status in _BY_STATUS:
        cls = _BY_STATUS[status]
    else:
        cls = InternalServerError if status >= 500 else APIStatusError
    text = f"Error code: {status} - {message or response.reason_phrase or 'error'}"
    return cls(text, response=response, body=body)
