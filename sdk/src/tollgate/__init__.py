"""Python client for Tollgate's platform API: keys, usage, threads, tools, search, jobs,
billing, providers and settings. Model calls go through the official `openai` and
`anthropic` SDKs, which `client.openai()` and `client.anthropic()` configure for Tollgate."""

from tollgate import types, webhooks
from tollgate._client import AsyncClient, AsyncTollgate, Client, Tollgate
from tollgate._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APIStreamError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConflictError,
    InternalServerError,
    JobTimeoutError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    TollgateError,
    UnprocessableEntityError,
    WebhookVerificationError,
)
from tollgate._pagination import AsyncPage, AsyncPaginator, SyncPage
from tollgate._streaming import AsyncThreadStream, ThreadStream
from tollgate._types import NOT_GIVEN, NotGiven
from tollgate._version import __version__

__all__ = [
    "NOT_GIVEN",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APIStreamError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncPage",
    "AsyncPaginator",
    "AsyncThreadStream",
    "AsyncTollgate",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "Client",
    "ConflictError",
    "InternalServerError",
    "JobTimeoutError",
    "NotFoundError",
    "NotGiven",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "SyncPage",
    "ThreadStream",
    "Tollgate",
    "TollgateError",
    "UnprocessableEntityError",
    "WebhookVerificationError",
    "__version__",
    "types",
    "webhooks",
]
