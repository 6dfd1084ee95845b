from tollgate.resources.billing import AsyncBilling, AsyncRuns, AsyncStripe, Billing, Runs, Stripe
from tollgate.resources.conversations import (
    AsyncConversationItems,
    AsyncConversations,
    ConversationItems,
    Conversations,
)
from tollgate.resources.jobs import AsyncJobs, Jobs
from tollgate.resources.keys import AsyncKeys, Keys
from tollgate.resources.providers import AsyncProviders, Providers
from tollgate.resources.responses import AsyncInputItems, AsyncResponses, InputItems, Responses
from tollgate.resources.search import AsyncSearch, Search
from tollgate.resources.settings import Alerts, AsyncAlerts, AsyncSettings, Settings
from tollgate.resources.threads import AsyncMessages, AsyncThreads, Messages, Threads
from tollgate.resources.tools import AsyncTools, Tools
from tollgate.resources.usage import AsyncLogs, AsyncUsageReports, Logs, UsageReports

__all__ = [
    "Alerts",
    "AsyncAlerts",
    "AsyncBilling",
    "AsyncConversationItems",
    "AsyncConversations",
    "AsyncInputItems",
    "AsyncJobs",
    "AsyncKeys",
    "AsyncLogs",
    "AsyncMessages",
    "AsyncProviders",
    "AsyncResponses",
    "AsyncRuns",
    "AsyncSearch",
    "AsyncSettings",
    "AsyncStripe",
    "AsyncThreads",
    "AsyncTools",
    "AsyncUsageReports",
    "Billing",
    "ConversationItems",
    "Conversations",
    "InputItems",
    "Jobs",
    "Keys",
    "Logs",
    "Messages",
    "Providers",
    "Responses",
    "Runs",
    "Search",
    "Settings",
    "Stripe",
    "Threads",
    "Tools",
    "UsageReports",
]
