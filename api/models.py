"""Every ORM model, imported in one place so Alembic and the test fixtures see the whole schema."""

from api.alert.models import Alert
from api.auth.models import ApiKey, KeySecret
from api.billing.models import (
    BillingLine,
    BillingRecord,
    BillingRun,
    StripeAccount,
    StripeEvent,
)
from api.dashboard.models import DashboardSession
from api.db import Base
from api.idempotency.models import IdempotencyRecord
from api.job.models import Job
from api.provider.models import ProviderCredential
from api.response.models import Conversation, ConversationItem, ResponseItem, StoredResponse
from api.tenant.models import Tenant
from api.thread.models import Thread, ThreadMessage
from api.tool.models import Tool
from api.trace.models import RequestTrace
from api.usage.models import UsageEvent

__all__ = [
    "Alert",
    "ApiKey",
    "Base",
    "BillingLine",
    "BillingRecord",
    "BillingRun",
    "Conversation",
    "ConversationItem",
    "DashboardSession",
    "IdempotencyRecord",
    "Job",
    "KeySecret",
    "ProviderCredential",
    "RequestTrace",
    "ResponseItem",
    "StoredResponse",
    "StripeAccount",
    "StripeEvent",
    "Tenant",
    "Thread",
    "ThreadMessage",
    "Tool",
    "UsageEvent",
]
