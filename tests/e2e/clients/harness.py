"""A running Tollgate in front of the scripted fakes, and what each client cell checks after.

One gateway (PostgreSQL + Redis) with OpenAI, Anthropic and Gemini, each pointed at its scripted
fake; each cell mints its own key, so the request log it reads holds exactly its own calls.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from api.app import create_app
from api.settings import Settings
from tests.conftest import SECRET_KEY
from tests.e2e.clients.scripted import ScriptedAnthropic, ScriptedGemini, ScriptedOpenAI
from tests.factories.tenants import ADMIN_TOKEN
from tests.fakes import anthropic_upstream, gemini_upstream
from tests.fakes.server import serve_in_thread

HERE = Path(__file__).resolve().parent
NODE_BIN = HERE / "node_modules" / ".bin"
# One model of each family, as the clients name them.
GPT, CLAUDE, GEMINI = "gpt-4.1", "claude-sonnet-4-20250514", "gemini-2.5-flash"
FAMILY = {GPT: "openai", CLAUDE: "anthropic", GEMINI: "gemini"}


@dataclass
class Fakes:
    openai: ScriptedOpenAI
    anthropic: ScriptedAnthropic
    gemini: ScriptedGemini

    def reset(self) -> None:
        self.openai.reset()
        self.anthropic.reset()
        self.gemini.reset()

    def reported(self, provider: str) -> list[dict[str, Any]]:
        return {"openai": self.openai.reported, "anthropic": self.anthropic.reported,
                "gemini": self.gemini.reported}[provider]  # fmt: skip


@contextlib.contextmanager
def scripted_fakes() -> Iterator[Fakes]:
    upstream = ScriptedOpenAI().start()
    try:
        with ScriptedAnthropic() as claude, ScriptedGemini() as gemini:
            assert isinstance(claude, ScriptedAnthropic)
            assert isinstance(gemini, ScriptedGemini)
            yield Fakes(upstream, claude, gemini)
    finally:
        upstream.stop()


@dataclass(frozen=True)
class Gateway:
    url: str
    master: str

    def key(self, name: str) -> str:
        response = httpx.post(
            f"{self.url}/v1/keys",
            json={"name": name[:100]},
            headers={"Authorization": f"Bearer {self.master}"},
        )
        assert response.status_code == 201, response.text
        secret: str = response.json()["secret"]
        return secret


def gateway_settings(
    fakes: Fakes, database_url: str, redis_url: str | None, data: Path
) -> Settings:
    return Settings(
        data_dir=data,
        database_url=database_url,
        redis_url=redis_url,
        secret_key=SECRET_KEY,
        admin_token=ADMIN_TOKEN,
        search_enabled=False,
        openai_api_key=SecretStr("sk-operator-openai"),
        openai_base_url=fakes.openai.openai_base_url,
        anthropic_api_key=SecretStr(anthropic_upstream.API_KEY),
        anthropic_base_url=fakes.anthropic.base_url,
        gemini_api_key=SecretStr(gemini_upstream.API_KEY),
        gemini_base_url=fakes.gemini.base_url,
    )


@contextlib.contextmanager
def running_gateway(settings: Settings) -> Iterator[Gateway]:
    with serve_in_thread(create_app(settings)) as url:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        tenant = httpx.post(f"{url}/admin/tenants", json={"name": "Clients"}, headers=admin)
        assert tenant.status_code == 201, tenant.text
        yield Gateway(url, tenant.json()["master_key"])


# Metering -------------------------------------------------------------------------------------


def logs(url: str, key: str, count: int) -> list[dict[str, Any]]:
    """The key's request log once it holds `count` entries (usage events land just after)."""
    data: list[dict[str, Any]] = []
    for _ in range(250):
        response = httpx.get(f"{url}/v1/logs?limit=100", headers={"Authorization": f"Bearer {key}"})
        data = response.json()["data"]
        if len(data) >= count:
            return data
        time.sleep(0.02)
    raise AssertionError(f"the log never reached {count} entries: {data}")


def normalised(provider: str, raw: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input incl. cache reads and writes, cache reads, cache writes, output incl. reasoning),
    written out here from each provider's published usage fields."""
    if provider == "anthropic":
        read, written = raw["cache_read_input_tokens"], raw["cache_creation_input_tokens"]
        return raw["input_tokens"] + read + written, read, written, raw["output_tokens"]
    if provider == "gemini":
        output = raw["candidatesTokenCount"] + raw.get("thoughtsTokenCount", 0)
        return raw["promptTokenCount"], raw.get("cachedContentTokenCount", 0), 0, output
    if "input_tokens" in raw:  # OpenAI's Responses API
        cached = raw["input_tokens_details"]["cached_tokens"]
        return raw["input_tokens"], cached, 0, raw["output_tokens"]
    cached = (raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return raw["prompt_tokens"], cached, 0, raw["completion_tokens"]


def assert_metered(gateway: Gateway, key: str, fakes: Fakes, model: str, *endpoints: str) -> None:
    """Every call the client made through `key` is in the log once, on one of `endpoints`, with
    what the upstream reported, priced at the catalog's published prices."""
    provider = FAMILY[model]
    reported = [normalised(provider, raw) for raw in fakes.reported(provider)]
    assert reported, "the upstream was never called"
    entries = logs(gateway.url, key, len(reported))
    assert len(entries) == len(reported), entries
    assert {(e["provider"], e["status"]) for e in entries} == {(provider, 200)}, entries
    assert {e["endpoint"] for e in entries} <= set(endpoints), entries
    models = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    price = next(m["pricing"] for m in models.json()["data"] if m["id"] == model)
    expected = sorted((u[0], u[1], u[3], _cost(u, price)) for u in reported)
    metered = sorted(
        (e["input_tokens"], e["cached_input_tokens"], e["output_tokens"], e["cost_micros"])
        for e in entries
    )
    assert metered == expected
    assert all(e["cost_micros"] > 0 and not e["estimated"] for e in entries)


def _cost(usage: tuple[int, int, int, int], price: dict[str, int]) -> int:
    tokens, read, written, out = usage
    scaled = (tokens - read - written) * price["input"] + read * price["cached_input"]
    scaled += written * price["cache_write"] + out * price["output"]
    return math.ceil(scaled / 1_000_000)  # prices are micro-USD per million tokens


# Processes ------------------------------------------------------------------------------------


def node_binary(name: str) -> Path:
    path = NODE_BIN / name
    assert path.exists(), f"{path} is missing: run `npm ci` in {HERE} (make test does)"
    return path


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A client's environment: this one without provider keys or proxies, a home of its own."""
    dropped = ("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "CLAUDE", "CODEX_", "TOLLGATE_")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(dropped)}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    return {**env, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"), "NO_COLOR": "1", **extra}  # fmt: skip


def run(command: list[str | Path], env: dict[str, str], cwd: Path,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [str(c) for c in command], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def which_node() -> str:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    return node


class EgressTrap:
    """Stands in as the clients' HTTP(S) proxy (everything but loopback is sent to it): it
    records what each connection asked for and refuses it, so a test can assert that no client
    tried to reach anything beyond 127.0.0.1 (telemetry, updates, a real provider)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        trap = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(4096).decode("latin-1").strip()
                trap.asked.append(line)
                self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> EgressTrap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def env(self) -> dict[str, str]:
        loopback = "127.0.0.1,localhost,::1"
        return {"HTTPS_PROXY": self.url, "HTTP_PROXY": self.url, "ALL_PROXY": self.url,
                "https_proxy": self.url, "http_proxy": self.url, "all_proxy": self.url,
                "NO_PROXY": loopback, "no_proxy": loopback}  # fmt: skip


def pdf() -> bytes:
    """A one-page PDF saying the secret, made here."""
    page = b"BT /F1 12 Tf 20 100 Td (the secret word is tollgate-7f3a) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(page), page),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref, size = len(out), len(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
