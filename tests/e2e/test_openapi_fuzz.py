"""The whole API against its own OpenAPI document: schemathesis generates requests from
`/openapi.json` for every operation, with a tenant's master key, against a running Tollgate
(PostgreSQL, Redis, the fake upstreams), and checks each answer:

- never a 5xx the document does not promise (`not_a_server_error`);
- every status, content type, header and body as documented;
- schema-invalid input rejected with a 4xx (`negative_data_rejection`).

Not checked yet: that every schema-valid request is accepted (`positive_data_acceptance`).
Some 400s are decided by data the document cannot express: an opaque cursor that was never
issued, a model name the catalog does not have, a webhook host that does not resolve.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from api.settings import Settings
from tests.conftest import SECRET_KEY, truncate_all
from tests.factories.tenants import ADMIN_TOKEN, bearer
from tests.fakes.server import serve_in_thread
from tests.fakes.upstream import FakeUpstream

EXAMPLES = 12  # per operation and phase: about 75 operations


@pytest.fixture(scope="module")
def fuzzed(
    postgres_url: str,
    fake_upstream_server: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, str]]]:
    """One running Tollgate for the whole module, and a tenant's master key. On PostgreSQL
    (its limits on text are what fuzzing found first), without Redis: the suite's shared
    Redis carries other tests' ledger streams and queues, which this app must not touch."""
    upstream = fake_upstream_server
    config = Settings(
        data_dir=Path(tmp_path_factory.mktemp("fuzz")),
        database_url=postgres_url,
        redis_url=None,
        secret_key=SECRET_KEY,
        admin_token=ADMIN_TOKEN,
        search_enabled=False,
        openai_api_key=SecretStr("sk-operator-openai"),
        openai_base_url=upstream.openai_base_url,
        upstream_read_timeout_seconds=2.0,
        retry_max_total_seconds=0.5,
        capacity_wait_seconds=0.2,
    )
    with serve_in_thread(create_app(config)) as url:
        created = httpx.post(
            f"{url}/admin/tenants", json={"name": "Fuzz"}, headers=bearer(ADMIN_TOKEN)
        )
        assert created.status_code == 201, created.text
        yield url, bearer(created.json()["master_key"])
    truncate_all(postgres_url)


def _operations() -> list[schemathesis.APIOperation]:
    """Every operation of the document the app serves (built without a server: the document
    does not depend on the database)."""
    with tempfile.TemporaryDirectory() as data_dir:
        document = create_app(Settings(data_dir=Path(data_dir), secret_key=SECRET_KEY)).openapi()
    loaded = schemathesis.openapi.from_dict(document)
    return [result.ok() for result in loaded.get_all_operations()]


@pytest.mark.parametrize("operation", _operations(), ids=lambda operation: operation.label)
def test_every_operation_answers_as_documented(
    operation: schemathesis.APIOperation, fuzzed: tuple[str, dict[str, str]]
) -> None:
    url, master = fuzzed
    headers = bearer(ADMIN_TOKEN) if operation.path.startswith("/admin/") else master

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases on every run
        suppress_health_check=list(HealthCheck),
    )
    def answers(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=url, headers=headers, timeout=30, excluded_checks=[positive_data_acceptance]
        )

    answers()
