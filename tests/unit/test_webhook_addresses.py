"""Which addresses a tenant-named host may be reached at, judged at save time (`check_url`,
BYOK `base_url`) and at connect time (`CheckedBackend`), before any connection is made."""

from __future__ import annotations

import httpcore
import pytest

from api.errors import InvalidRequest
from api.kit.webhook_client import AddressRefused, CheckedBackend
from api.kit.webhooks import check_url, is_public_address
from api.provider.service import check_base_url

# IPv6 spellings of private IPv4 addresses: NAT64, 6to4, IPv4-compatible, IPv4-mapped.
PRIVATE_IN_IPV6 = ["64:ff9b::7f00:1", "2002:7f00:1::", "::127.0.0.1", "::ffff:10.0.0.1"]


def _answers(*addresses: str):
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


class TestIsPublicAddress:
    @pytest.mark.parametrize("address", PRIVATE_IN_IPV6)
    def test_private_ipv4_inside_ipv6_is_refused(self, address: str):
        assert is_public_address(address) is False

    def test_public_ipv4_inside_nat64_is_allowed(self):
        assert is_public_address("64:ff9b::808:808") is True

    @pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1"])
    def test_plain_private_addresses_are_refused(self, address: str):
        assert is_public_address(address) is False


class TestConnectTimeCheck:
    @pytest.mark.parametrize("address", [*PRIVATE_IN_IPV6, "127.0.0.1"])
    async def test_a_private_answer_is_refused_before_connecting(self, address: str):
        backend = CheckedBackend(allow_private=False, resolve=_answers(address))
        with pytest.raises(AddressRefused, match="private or loopback"):
            await backend.connect_tcp("hooks.example.com", 443, timeout=1)

    async def test_one_private_answer_among_public_ones_is_refused(self):
        backend = CheckedBackend(allow_private=False, resolve=_answers("8.8.8.8", "10.0.0.1"))
        with pytest.raises(AddressRefused):
            await backend.connect_tcp("hooks.example.com", 443, timeout=1)

    async def test_a_name_that_does_not_resolve_is_a_connect_error(self):
        async def nowhere(host: str, port: int) -> list[str]:
            raise OSError("Name or service not known")

        backend = CheckedBackend(allow_private=False, resolve=nowhere)
        with pytest.raises(httpcore.ConnectError, match="does not resolve"):
            await backend.connect_tcp("hooks.example.com", 443, timeout=1)


class TestCheckUrl:
    @pytest.mark.parametrize("url", ["https://example.com:99999/x", "http://[::1/x"])
    async def test_an_unparseable_url_is_a_400_naming_the_field(self, url: str):
        with pytest.raises(InvalidRequest) as raised:
            await check_url(url, allow_private=True, param="webhook_url")
        assert raised.value.param == "webhook_url"

    async def test_an_ipv6_spelling_of_loopback_is_refused(self):
        with pytest.raises(InvalidRequest, match="private or loopback"):
            await check_url(
                "https://hooks.example.com/x", allow_private=False, param="webhook_url",
                resolve=_answers("64:ff9b::7f00:1"),
            )  # fmt: skip


class TestByokBaseUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "http://api.example.com/v1",  # plain http, with private addresses not allowed
            "https://user:secret@api.example.com/v1",
            "https://token@api.example.com/v1",
            "https://api.example.com/v1?key=1",
            "https://api.example.com/v1?",
            "https://api.example.com/v1#fragment",
            "https://api.example.com:99999/v1",
            "ftp://api.example.com/v1",
        ],
    )
    async def test_refused_shapes(self, url: str):
        with pytest.raises(InvalidRequest) as raised:
            await check_base_url(url, allow_private=False)
        assert raised.value.param == "base_url"

    async def test_http_is_fine_where_private_addresses_are_allowed(self):
        await check_base_url("http://127.0.0.1:8080/v1", allow_private=True)

    @pytest.mark.parametrize(
        "url", ["https://u:p@127.0.0.1/v1", "http://127.0.0.1/v1?x", "http://127.0.0.1/v1#f"]
    )
    async def test_userinfo_query_and_fragment_are_refused_even_where_private_is_allowed(
        self, url: str
    ):
        with pytest.raises(InvalidRequest) as raised:
            await check_base_url(url, allow_private=True)
        assert raised.value.param == "base_url"
