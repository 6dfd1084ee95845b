"""Which client method calls each route of Tollgate's platform API.

A test compares this table with the server's OpenAPI document: a route the server has and this
table lacks (or excludes with a reason) fails it. Model calls (`/v1/chat/completions`,
`/v1/messages`, `/v1/responses`, `/v1/models`, Google's routes) go through the official SDKs:
`client.openai()`, `client.anthropic()`.
"""

from __future__ import annotations

from typing import Final

ROUTES: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("POST", "/v1/keys"): ("keys.create",),
    ("GET", "/v1/keys"): ("keys.list",),
    ("GET", "/v1/keys/self"): ("keys.retrieve_self",),
    ("GET", "/v1/keys/{key_id}"): ("keys.retrieve",),
    ("PATCH", "/v1/keys/{key_id}"): ("keys.update",),
    ("DELETE", "/v1/keys/{key_id}"): ("keys.revoke",),
    ("POST", "/v1/keys/{key_id}/rotate"): ("keys.rotate",),
    ("GET", "/v1/usage"): ("usage.query",),
    ("GET", "/v1/cache/stats"): ("usage.cache_stats",),
    ("GET", "/v1/usage/export"): ("usage.export", "usage.iter_export"),
    ("GET", "/v1/logs"): ("logs.list",),
    ("GET", "/v1/traces/{trace_id}"): ("logs.trace",),
    ("POST", "/v1/threads"): ("threads.create",),
    ("GET", "/v1/threads"): ("threads.list",),
    ("GET", "/v1/threads/{thread_id}"): ("threads.retrieve",),
    ("DELETE", "/v1/threads/{thread_id}"): ("threads.delete",),
    ("POST", "/v1/threads/{thread_id}/messages"): (
        "threads.messages.create",
        "threads.messages.stream",
    ),
    ("GET", "/v1/threads/{thread_id}/messages"): ("threads.messages.list",),
    ("POST", "/v1/tools"): ("tools.create",),
    ("GET", "/v1/tools"): ("tools.list",),
    ("GET", "/v1/tools/{tool_id}"): ("tools.retrieve",),
    ("DELETE", "/v1/tools/{tool_id}"): ("tools.delete",),
    ("POST", "/v1/tools/{tool_id}/rotate-secret"): ("tools.rotate_secret",),
    ("POST", "/v1/search"): ("search.query",),
    ("POST", "/v1/jobs"): ("jobs.submit",),
    ("GET", "/v1/jobs"): ("jobs.list",),
    ("GET", "/v1/jobs/{job_id}"): ("jobs.retrieve", "jobs.wait"),
    ("DELETE", "/v1/jobs/{job_id}"): ("jobs.cancel",),
    ("GET", "/v1/billing/stripe"): ("billing.stripe.retrieve",),
    ("PUT", "/v1/billing/stripe"): ("billing.stripe.set",),
    ("POST", "/v1/billing/sync"): ("billing.sync",),
    ("GET", "/v1/billing/runs"): ("billing.runs.list",),
    ("GET", "/v1/billing/runs/{run_id}"): ("billing.runs.retrieve",),
    ("PUT", "/v1/providers/{name}"): ("providers.set",),
    ("GET", "/v1/providers"): ("providers.list",),
    ("GET", "/v1/providers/{name}"): ("providers.retrieve",),
    ("DELETE", "/v1/providers/{name}"): ("providers.delete",),
    ("GET", "/v1/settings"): ("settings.retrieve",),
    ("PUT", "/v1/settings"): ("settings.update",),
    ("POST", "/v1/settings/webhook-secret"): ("settings.create_webhook_secret",),
    ("POST", "/v1/shield/test"): ("settings.test_shield",),
    ("GET", "/v1/alerts"): ("alerts.list",),
    ("GET", "/v1/responses/{response_id}"): ("responses.retrieve",),
    ("DELETE", "/v1/responses/{response_id}"): ("responses.delete",),
    ("GET", "/v1/responses/{response_id}/input_items"): ("responses.input_items.list",),
    ("POST", "/v1/conversations"): ("conversations.create",),
    ("GET", "/v1/conversations/{conversation_id}"): ("conversations.retrieve",),
    ("POST", "/v1/conversations/{conversation_id}"): ("conversations.update",),
    ("DELETE", "/v1/conversations/{conversation_id}"): ("conversations.delete",),
    ("GET", "/v1/conversations/{conversation_id}/items"): ("conversations.items.list",),
    ("POST", "/v1/conversations/{conversation_id}/items"): ("conversations.items.create",),
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}"): (
        "conversations.items.retrieve",
    ),
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}"): (
        "conversations.items.delete",
    ),
}
