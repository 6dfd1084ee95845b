"""The error tree and the one table that maps it to HTTP and to both API families.

    AppError
    ├── InvalidRequest            400 invalid_request
    │   ├── InvalidModel          400 invalid_model
    │   ├── ProviderNotConfigured 400 provider_not_configured
    │   ├── StripeNotConfigured   400 stripe_not_configured
    │   └── InvalidSignature      400 invalid_signature (a webhook's signature does not verify)
    ├── UpstreamClientError       4xx the provider's own status and code
    ├── AuthenticationFailed      401 invalid_api_key
    │   └── MissingApiKey         401 missing_api_key
    ├── BudgetExceeded            402 budget_exceeded
    ├── PaymentRequired           402 payment_required
    ├── PermissionDenied          403 permission_denied
    │   ├── InsufficientScope     403 insufficient_scope
    │   ├── ProviderNotAllowed    403 provider_not_allowed
    │   └── ModelNotAllowed       403 model_not_allowed
    ├── NotFound                  404 not_found
    ├── MethodNotAllowed          405 method_not_allowed
    ├── Conflict                  409 conflict
    ├── RequestTooLarge           413 request_too_large
    ├── ShieldFailed              422 shield_failed (the secret shield could not mask in time)
    ├── RateLimited               429 rate_limited
    │   └── QuotaExhausted        429 insufficient_quota (an upstream account out of credit)
    ├── InternalError             500 internal_error
    ├── LimitsUnavailable         503 limits_unavailable (the counter store is unreachable)
    ├── CapacityQueueFull         503 capacity_queue_full (every upstream account cooling down)
    ├── SearchUnavailable         503 search_unavailable (the vector store or the embedder is down)
    ├── DatabaseUnavailable       503 database_unavailable (the database is down or restarting)
    ├── UpstreamError             502 upstream_error
    ├── UpstreamUnavailable       503 upstream_unavailable
    └── UpstreamTimeout           504 upstream_timeout

`ERROR_TABLE` is the only place that says which status, OpenAI `type` and Anthropic `type` a
class renders as, and whether clients should retry (`x-should-retry`, SPEC §6). Google's shape
(`google_body`) names the canonical status of the HTTP status, as Google's own errors do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


class AppError(Exception):
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Internal error."

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.param = param
        self.headers = headers or {}
        super().__init__(self.message)

    @property
    def status_code(self) -> int:
        return ERROR_TABLE[type(self)].status

    @property
    def retryable(self) -> bool:
        return ERROR_TABLE[type(self)].retryable

    @property
    def public_code(self) -> str:
        """The `code` clients see; the class's own unless the error relays someone else's."""
        return self.code


class InvalidRequest(AppError):
    code = "invalid_request"
    default_message = "The request is invalid."


class InvalidModel(InvalidRequest):
    code = "invalid_model"
    default_message = "The model does not exist."


class ProviderNotConfigured(InvalidRequest):
    code = "provider_not_configured"
    default_message = "The provider has no credentials configured."


class StripeNotConfigured(InvalidRequest):
    code = "stripe_not_configured"
    default_message = "Stripe is not configured for this tenant: PUT /v1/billing/stripe first."


class InvalidSignature(InvalidRequest):
    code = "invalid_signature"
    default_message = "The webhook signature does not verify."


class AuthenticationFailed(AppError):
    code = "invalid_api_key"
    default_message = "Invalid API key."


class MissingApiKey(AuthenticationFailed):
    code = "missing_api_key"
    default_message = (
        "No API key provided. Send it as 'Authorization: Bearer <key>', 'x-api-key' "
        "or 'x-goog-api-key'."
    )


class BudgetExceeded(AppError):
    code = "budget_exceeded"
    default_message = "A spending limit of this key has been reached."


class PaymentRequired(AppError):
    code = "payment_required"
    default_message = "This key is suspended for non-payment."


class PermissionDenied(AppError):
    code = "permission_denied"
    default_message = "This key may not do that."


class InsufficientScope(PermissionDenied):
    code = "insufficient_scope"
    default_message = "This route needs a master key."


class ProviderNotAllowed(PermissionDenied):
    code = "provider_not_allowed"
    default_message = "This key may not use that provider."


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"
    default_message = "This key may not use that model."


class NotFound(AppError):
    code = "not_found"
    default_message = "Not found."


class MethodNotAllowed(AppError):
    code = "method_not_allowed"
    default_message = "Method not allowed."


class Conflict(AppError):
    code = "conflict"
    default_message = "The request conflicts with the current state."


class RequestTooLarge(AppError):
    code = "request_too_large"
    default_message = "The request body is too large."


class ShieldFailed(AppError):
    code = "shield_failed"
    default_message = "The secret shield could not mask this request; nothing was sent upstream."


class RateLimited(AppError):
    code = "rate_limited"
    default_message = "Rate limit reached."


class QuotaExhausted(RateLimited):
    """An upstream account has no quota or credit left (OpenAI `insufficient_quota`): never
    retried on that account, and not worth a client's retry either."""

    code = "insufficient_quota"
    default_message = "The provider account has no quota left."


class InternalError(AppError):
    code = "internal_error"
    default_message = "The server had an error while processing the request."


class UpstreamClientError(AppError):
    """An upstream 4xx the client caused (bad request, context too long): relayed as is."""

    code = "upstream_client_error"
    default_message = "The provider rejected the request."

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int = 400,
        param: str | None = None,
        upstream_code: str | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.upstream_status = status
        # The provider's own code, cut to what the ledger stores.
        self.upstream_code = upstream_code[:64] if upstream_code else None

    @property
    def status_code(self) -> int:
        return self.upstream_status

    @property
    def retryable(self) -> bool:
        return self.upstream_status == 409  # SPEC §6: 409 is worth retrying, other 4xx are not

    @property
    def public_code(self) -> str:
        return self.upstream_code or "invalid_request"


class LimitsUnavailable(AppError):
    code = "limits_unavailable"
    default_message = "This key's limits cannot be checked right now; try again shortly."


class CapacityQueueFull(AppError):
    code = "capacity_queue_full"
    default_message = "Every upstream account for this model is cooling down; try again shortly."


class SearchUnavailable(AppError):
    code = "search_unavailable"
    default_message = "Search is unavailable right now; try again shortly."


class DatabaseUnavailable(AppError):
    code = "database_unavailable"
    default_message = "The database is unavailable right now; try again shortly."


class UpstreamError(AppError):
    code = "upstream_error"
    default_message = "The upstream provider returned an error."


class UpstreamUnavailable(AppError):
    code = "upstream_unavailable"
    default_message = "The upstream provider is overloaded or unavailable."


class UpstreamTimeout(AppError):
    code = "upstream_timeout"
    default_message = "The upstream provider did not answer in time."


@dataclass(frozen=True, slots=True)
class ErrorRow:
    status: int
    openai_type: str
    anthropic_type: str
    retryable: bool


ERROR_TABLE: dict[type[AppError], ErrorRow] = {
    AppError: ErrorRow(500, "server_error", "api_error", True),
    InvalidRequest: ErrorRow(400, "invalid_request_error", "invalid_request_error", False),
    InvalidModel: ErrorRow(400, "invalid_request_error", "invalid_request_error", False),
    ProviderNotConfigured: ErrorRow(400, "invalid_request_error", "invalid_request_error", False),
    StripeNotConfigured: ErrorRow(400, "invalid_request_error", "invalid_request_error", False),
    InvalidSignature: ErrorRow(400, "invalid_request_error", "invalid_request_error", False),
    AuthenticationFailed: ErrorRow(401, "authentication_error", "authentication_error", False),
    MissingApiKey: ErrorRow(401, "authentication_error", "authentication_error", False),
    BudgetExceeded: ErrorRow(402, "insufficient_quota", "billing_error", False),
    PaymentRequired: ErrorRow(402, "insufficient_quota", "billing_error", False),
    PermissionDenied: ErrorRow(403, "permission_error", "permission_error", False),
    InsufficientScope: ErrorRow(403, "permission_error", "permission_error", False),
    ProviderNotAllowed: ErrorRow(403, "permission_error", "permission_error", False),
    ModelNotAllowed: ErrorRow(403, "permission_error", "permission_error", False),
    NotFound: ErrorRow(404, "not_found_error", "not_found_error", False),
    MethodNotAllowed: ErrorRow(405, "invalid_request_error", "invalid_request_error", False),
    Conflict: ErrorRow(409, "invalid_request_error", "invalid_request_error", True),
    RequestTooLarge: ErrorRow(413, "invalid_request_error", "request_too_large", False),
    ShieldFailed: ErrorRow(422, "invalid_request_error", "invalid_request_error", False),
    RateLimited: ErrorRow(429, "rate_limit_error", "rate_limit_error", True),
    QuotaExhausted: ErrorRow(429, "insufficient_quota", "rate_limit_error", False),
    InternalError: ErrorRow(500, "server_error", "api_error", True),
    UpstreamClientError: ErrorRow(400, "invalid_request_error", "invalid_request_error", False),
    LimitsUnavailable: ErrorRow(503, "server_error", "overloaded_error", True),
    CapacityQueueFull: ErrorRow(503, "server_error", "overloaded_error", True),
    SearchUnavailable: ErrorRow(503, "server_error", "api_error", True),
    DatabaseUnavailable: ErrorRow(503, "server_error", "api_error", True),
    UpstreamError: ErrorRow(502, "server_error", "api_error", True),
    UpstreamUnavailable: ErrorRow(503, "server_error", "overloaded_error", True),
    UpstreamTimeout: ErrorRow(504, "timeout_error", "timeout_error", True),
}


def error_headers(err: AppError) -> dict[str, str]:
    return {**err.headers, "x-should-retry": "true" if err.retryable else "false"}


def openai_body(err: AppError) -> dict[str, Any]:
    row = ERROR_TABLE[type(err)]
    return {
        "error": {
            "message": err.message,
            "type": row.openai_type,
            "code": err.public_code,
            "param": err.param,
        }
    }


def anthropic_body(err: AppError) -> dict[str, Any]:
    row = ERROR_TABLE[type(err)]
    return {"type": "error", "error": {"type": row.anthropic_type, "message": err.message}}


# Google's canonical status per HTTP status (google.rpc.Code's HTTP mapping; 402, 405 and 502
# have none there: the nearest in meaning).
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
GOOGLE_STATUSES = frozenset({*_GOOGLE_STATUS.values(), "FAILED_PRECONDITION", "OUT_OF_RANGE",
                             "ALREADY_EXISTS", "DATA_LOSS", "UNKNOWN"})  # fmt: skip


def google_status(err: AppError) -> str:
    """The canonical status of `err`: a Gemini upstream's own, when it is relayed."""
    if err.public_code in GOOGLE_STATUSES:
        return err.public_code
    if isinstance(err, PaymentRequired):
        return "FAILED_PRECONDITION"
    status = err.status_code
    return _GOOGLE_STATUS.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL")


def google_body(err: AppError) -> dict[str, Any]:
    """Google's error shape (`google.rpc.Status` in JSON): the gateway's `code` is the
    ErrorInfo reason, a field at fault a BadRequest field violation, a retry hint RetryInfo."""
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": err.public_code.upper(),
         "domain": "tollgate"}
    ]  # fmt: skip
    if err.param:
        violation = {"field": err.param, "description": err.message}
        details.append(
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
        )
    retry_after = err.headers.get("retry-after")
    if retry_after is not None and retry_after.isdigit():
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"}
        )
    status = err.status_code
    return {
        "error": {
            "code": status, "message": err.message, "status": google_status(err),
            "details": details,
        }
    }  # fmt: skip
