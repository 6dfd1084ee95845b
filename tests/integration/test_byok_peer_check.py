"""A tenant's own provider host (its BYOK `base_url`) is reached only at public addresses unless
`allow_private_webhooks` is set: checked at connect time, on the addresses the name resolves to
then, so a name that turns private after it was saved is refused too, as a metered upstream
error."""

from __future__ import annotations

from api.settings import Settings
from tests.conftest import app_client
from tests.factories.chat import HELLO
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.factories.usage import logs_when_settled
from tests.fakes.upstream import FakeUpstream

ASK = {"model": "deepseek-chat", "messages": HELLO}


class TestByokPeerCheck:
    async def test_a_byok_host_that_resolves_to_loopback_is_refused_at_connect_time(
        self, settings: Settings, upstream: FakeUpstream
    ):
        # `localhost` stands for a tenant's name that resolved to a public address when the key
        # was saved and resolves to 127.0.0.1 now.
        base_url = upstream.deepseek_base_url.replace("127.0.0.1", "localhost")
        allowed = settings.model_copy(update={"allow_private_webhooks": True})
        async with app_client(allowed) as http:
            tenant = await create_tenant(http)
            key = await create_key(http, tenant)
            body = {"api_key": "sk-tenant-own-key-1234", "base_url": base_url}
            stored = await http.put("/v1/providers/deepseek", json=body, headers=tenant.headers)
            assert stored.status_code == 200, stored.text
            served = await http.post("/v1/chat/completions", json=ASK,
                                     headers=bearer(key["secret"]))  # fmt: skip
            assert served.status_code == 200, served.text
        reached = len(upstream.seen)

        strict = settings.model_copy(update={"allow_private_webhooks": False})
        async with app_client(strict) as http:
            refused = await http.post("/v1/chat/completions", json=ASK,
                                      headers=bearer(key["secret"]))  # fmt: skip
            assert refused.status_code == 502, refused.text
            assert refused.json()["error"]["code"] == "upstream_error"
            assert "localhost" not in refused.text  # the host stays in the logs
            assert "127.0.0.1" not in refused.text
            logs = await logs_when_settled(http, tenant, 2)
        assert sorted(log["status"] for log in logs) == [200, 502]
        assert len(upstream.seen) == reached  # never dialled
