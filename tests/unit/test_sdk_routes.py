"""The SDK against the server's route list: every platform route has a client method (or is
excluded here, with the reason), and the sync and async clients are the same API."""

from __future__ import annotations

import inspect
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from tollgate import AsyncTollgate, Tollgate
from tollgate._routes import ROUTES

from api.app import create_app
from api.settings import Settings

# Routes the SDK leaves out on purpose, each with why. Anything else the server serves must be
# in tollgate._routes.ROUTES: a new route fails this test until the SDK covers it.
MODEL_CALLS = "a model call: made with the official SDKs (client.openai(), client.anthropic())"
EXCLUDED: dict[tuple[str, str], str] = {
    ("POST", "/v1/chat/completions"): MODEL_CALLS,
    ("POST", "/v1/messages"): MODEL_CALLS,
    ("POST", "/v1/messages/count_tokens"): MODEL_CALLS,
    ("POST", "/v1/responses"): MODEL_CALLS,
    ("GET", "/v1/models"): MODEL_CALLS,
    ("POST", "/v1/embeddings"): MODEL_CALLS,
    ("POST", "/v1/audio/transcriptions"): MODEL_CALLS,
    ("POST", "/v1/audio/translations"): MODEL_CALLS,
    ("POST", "/v1/audio/speech"): MODEL_CALLS,
    ("POST", "/v1/images/generations"): MODEL_CALLS,
    ("POST", "/v1/images/edits"): MODEL_CALLS,
    ("GET", "/healthz"): "operations: probed by load balancers, not called by backends",
    ("GET", "/readyz"): "operations: probed by load balancers, not called by backends",
    ("POST", "/admin/tenants"): "the operator's admin API (TOLLGATE_ADMIN_TOKEN), not a tenant's",
    ("POST", "/v1/billing/stripe/webhook/{tenant_id}"): "called by Stripe, signed by Stripe",
}
# Families of routes left out, matched by pattern: Google's model routes (the google-genai SDK
# calls them), the dashboard (a browser's), metrics (Prometheus').
EXCLUDED_PATTERNS: dict[str, str] = {
    r"^/v1beta/": "Google's model API: called by the google-genai SDK",
    r"^/v1/models/[^/]+:": "Google's model API: called by the google-genai SDK",
    r"^/dashboard(/|$)": "the dashboard: a browser's, with a session cookie",
    r"^/metrics$": "Prometheus metrics: scraped with the admin token",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), secret_key="s" * 48)
    document: dict[str, Any] = create_app(settings).openapi()
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


def _excluded(route: tuple[str, str]) -> bool:
    return route in EXCLUDED or any(re.search(p, route[1]) for p in EXCLUDED_PATTERNS)


def _resolve(root: object, dotted: str) -> Any:
    target = root
    for name in dotted.split("."):
        target = getattr(target, name)
    return target


class TestRouteCoverage:
    def test_every_platform_route_has_a_client_method(self, served):
        missing = sorted(r for r in served if r not in ROUTES and not _excluded(r))
        assert not missing, (
            f"routes the SDK does not cover (add them to tollgate._routes): {missing}"
        )

    def test_every_method_in_the_table_exists_on_both_clients(self):
        clients = [Tollgate(api_key="x"), AsyncTollgate(api_key="x")]
        for names in ROUTES.values():
            for dotted in names:
                for client in clients:
                    assert callable(_resolve(client, dotted)), (type(client).__name__, dotted)

    def test_the_table_names_only_routes_the_server_has(self, served):
        assert not set(ROUTES) - served
        assert not set(EXCLUDED) - served

    def test_the_table_and_the_exclusions_do_not_overlap(self):
        assert not [route for route in ROUTES if _excluded(route)]


def _resources(cls: type) -> dict[str, type]:
    """A client's (or resource's) resources: its cached properties and their return types."""
    out: dict[str, type] = {}
    for name, member in vars(cls).items():
        if isinstance(member, cached_property):
            out[name] = inspect.signature(member.func, eval_str=True).return_annotation
    return out


def _methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_") and not isinstance(member, type)
    }


def _pairs(sync_cls: type, async_cls: type, path: str = "client") -> list[tuple[str, type, type]]:
    sync_resources, async_resources = _resources(sync_cls), _resources(async_cls)
    assert list(sync_resources) == list(async_resources), path
    pairs = [(path, sync_cls, async_cls)]
    for name in sync_resources:
        pairs += _pairs(sync_resources[name], async_resources[name], f"{path}.{name}")
    return pairs


def _is_async(method: Any) -> bool:
    returns = inspect.signature(method).return_annotation
    return (
        inspect.iscoroutinefunction(method)
        or inspect.isasyncgenfunction(method)
        or str(returns).startswith(("AsyncPaginator", "AsyncTollgate"))
        or returns in ("_openai.AsyncOpenAI", "_anthropic.AsyncAnthropic")
    )


class TestParity:
    PAIRS = _pairs(Tollgate, AsyncTollgate)

    def test_every_resource_has_an_async_twin(self):
        paths = [path for path, _, _ in self.PAIRS]
        for expected in ["client.keys", "client.threads.messages", "client.billing.stripe",
                         "client.billing.runs", "client.jobs", "client.search"]:  # fmt: skip
            assert expected in paths

    @pytest.mark.parametrize(("path", "sync_cls", "async_cls"), PAIRS, ids=lambda v: str(v))
    def test_the_same_methods_with_the_same_parameters(self, path, sync_cls, async_cls):
        sync_methods, async_methods = _methods(sync_cls), _methods(async_cls)
        assert list(sync_methods) == list(async_methods), path
        for name, method in sync_methods.items():
            twin = async_methods[name]
            assert inspect.signature(method).parameters == inspect.signature(twin).parameters, (
                f"{path}.{name}"
            )
            assert not inspect.iscoroutinefunction(method), f"{path}.{name}"
            if name not in ("with_options", "openai", "anthropic"):
                assert _is_async(twin), f"{path}.{name} is not awaitable in the async client"


def test_the_package_is_typed():
    import tollgate

    assert (Path(tollgate.__file__).parent / "py.typed").exists()
