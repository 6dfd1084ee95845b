"""The keys pages' forms: numbers as people type them, limits as the API stores them, and the
master key's rotation (SPEC §5.13)."""

from __future__ import annotations

import re

import httpx
import pytest

from api.settings import Settings
from tests.dashboard import dashboard_client, sign_in
from tests.factories.tenants import TenantFixture, create_key, create_tenant


async def _key(client: httpx.AsyncClient, tenant: TenantFixture, key_id: str) -> dict:
    body: dict = (await client.get(f"/v1/keys/{key_id}", headers=tenant.headers)).json()
    return body


class TestNumbers:
    @pytest.mark.parametrize(
        ("field", "typed"),
        [
            ("tpm", "1e400000"),  # an exponent: never computed with
            ("tpm", "1" * 40),  # past the schema's bound
            ("rpm", "Infinity"),
            ("rpm", "sNaN"),
            ("rpm", "2.5"),
            ("max_spend_usd", "10,50"),  # a decimal comma: not 1050
            ("max_spend_usd", "-3"),
            ("max_spend_usd", "1e3"),
        ],
    )
    async def test_a_number_out_of_shape_is_a_400_page_and_changes_nothing(
        self, settings: Settings, field: str, typed: str
    ):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            csrf = await sign_in(client, tenant.master_key)
            key = await create_key(client, tenant, name="u", max_spend_usd=10)
            response = await client.post(
                f"/dashboard/keys/{key['id']}/limits",
                data={"csrf": csrf, "max_spend_usd": "10", field: typed},
            )
            assert response.status_code == 400, response.text
            assert response.headers["content-type"].startswith("text/html")
            after = await _key(client, tenant, key["id"])
            assert (after["max_spend_usd"], after["rpm"], after["tpm"]) == (10.0, None, None)

    async def test_thousands_separators_and_a_dollar_sign_are_read(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            csrf = await sign_in(client, tenant.master_key)
            key = await create_key(client, tenant, name="u")
            response = await client.post(
                f"/dashboard/keys/{key['id']}/limits",
                data={"csrf": csrf, "max_spend_usd": "$1,250.50", "rpm": "60", "tpm": "90000"},
            )
            assert response.status_code == 303
            after = await _key(client, tenant, key["id"])
            assert (after["max_spend_usd"], after["rpm"], after["tpm"]) == (1250.5, 60, 90000)

    async def test_a_tiny_cap_is_shown_as_written(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            await sign_in(client, tenant.master_key)
            key = await create_key(client, tenant, name="u", max_spend_usd="0.000012")
            page = (await client.get(f"/dashboard/keys/{key['id']}")).text
            assert "$0.00 of $0.000012" in page
            assert 'value="0.000012"' in page
            assert "e-05" not in page


class TestMonthlyCap:
    async def test_the_cap_given_as_another_limit_is_the_cap(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            csrf = await sign_in(client, tenant.master_key)
            key = await create_key(client, tenant, name="u")
            added = await client.post(
                f"/dashboard/keys/{key['id']}/limits",
                data={"csrf": csrf, "max_spend_usd": "", "metric": "spend_usd",
                      "period": "month", "max": "50"},
            )  # fmt: skip
            assert added.status_code == 303
            after = await _key(client, tenant, key["id"])
            assert after["max_spend_usd"] == 50.0
            assert [(lim["metric"], lim["period"]) for lim in after["limits"]] == [
                ("spend_usd", "month")
            ]
            both = await client.post(
                f"/dashboard/keys/{key['id']}/limits",
                data={"csrf": csrf, "max_spend_usd": "20", "metric": "spend_usd",
                      "period": "month", "max": "30"},
            )  # fmt: skip
            assert both.status_code == 400
            assert (await _key(client, tenant, key["id"]))["max_spend_usd"] == 50.0


class TestRotatingTheMasterKey:
    async def test_it_asks_for_the_key_and_signs_every_session_out(self, settings: Settings):
        async with dashboard_client(settings) as client, dashboard_client(settings) as other:
            tenant = await create_tenant(client)
            csrf = await sign_in(client, tenant.master_key)
            await sign_in(other, tenant.master_key)
            master = (await client.get("/v1/keys/self", headers=tenant.headers)).json()
            url = f"/dashboard/keys/{master['id']}/rotate"
            for typed in ("", "qlk_live_wrong"):
                refused = await client.post(url, data={"csrf": csrf, "current_master_key": typed})
                assert refused.status_code == 400
            still = await client.get("/v1/keys/self", headers=tenant.headers)
            assert still.status_code == 200  # not rotated
            rotated = await client.post(
                url, data={"csrf": csrf, "current_master_key": tenant.master_key}
            )
            assert rotated.status_code == 200
            secret = re.search(r'id="secret" type="text" readonly value="([^"]+)"', rotated.text)
            assert secret is not None
            for browser in (client, other):  # both sessions ended
                assert (await browser.get("/dashboard/keys")).status_code == 303
            await sign_in(client, secret.group(1))

    async def test_a_standard_key_rotates_without_asking(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            csrf = await sign_in(client, tenant.master_key)
            key = await create_key(client, tenant, name="u")
            rotated = await client.post(f"/dashboard/keys/{key['id']}/rotate", data={"csrf": csrf})
            assert rotated.status_code == 200
            assert (await client.get("/dashboard/keys")).status_code == 200  # still signed in
