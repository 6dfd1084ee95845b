"""Slow and hostile clients against a real `tollgate serve` (`api/kit/connections.py`): idle
connections, a trickled head (slowloris), a trickled body, a body over the limit, a client
that never reads its stream, and 10,000 idle connections. Each time the server goes on
answering everyone else, within bounded memory, and bills what it served once."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET_KEY
from tests.e2e.processes import start, stop, tollgate_env, wait_healthy
from tests.factories.chat import HELLO
from tests.factories.tenants import ADMIN_TOKEN
from tests.fakes.upstream import FakeUpstream
from tools.testenv import free_port

TIMEOUT = 1.5  # the server's header and body timeouts here
WRITE_TIMEOUT = 2.0
MAX_BODY = 64 * 1024
IDLE = 10_000


@dataclass
class Server:
    url: str
    port: int
    pid: int
    secret: str
    master: str

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no RSS")

    def open_files(self) -> int:
        return len(list(Path(f"/proc/{self.pid}/fd").iterdir()))

    def logs(self) -> list[dict[str, object]]:
        answer = httpx.get(
            f"{self.url}/v1/logs", headers={"Authorization": f"Bearer {self.master}"}
        )
        data: list[dict[str, object]] = answer.json()["data"]
        return data


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fake_upstream_server: FakeUpstream
) -> Iterator[Server]:
    with _serve(tmp_path_factory.mktemp("hostile"), fake_upstream_server, TIMEOUT) as running:
        yield running


@contextlib.contextmanager
def _serve(workdir: Path, upstream: FakeUpstream, header_timeout: float) -> Iterator[Server]:
    # 10,000 client sockets here and as many on the server (which inherits the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 2 * IDLE + 1000) if hard != resource.RLIM_INFINITY else 2 * IDLE + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    port = free_port()
    env = tollgate_env(
        workdir / "data",
        TOLLGATE_PORT=str(port),
        TOLLGATE_SECRET_KEY=SECRET_KEY,
        TOLLGATE_ADMIN_TOKEN=ADMIN_TOKEN,
        TOLLGATE_OPENAI_API_KEY="sk-operator",
        TOLLGATE_OPENAI_BASE_URL=upstream.openai_base_url,
        TOLLGATE_HEADER_TIMEOUT_SECONDS=str(header_timeout),
        TOLLGATE_BODY_TIMEOUT_SECONDS=str(TIMEOUT),
        TOLLGATE_CLIENT_WRITE_TIMEOUT_SECONDS=str(WRITE_TIMEOUT),
        TOLLGATE_MAX_BODY_BYTES=str(MAX_BODY),
        TOLLGATE_LOG_LEVEL="warning",
    )
    log = workdir / "tollgate.log"
    process = start(["serve"], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        tenant = httpx.post(
            f"{url}/admin/tenants", json={"name": "hostile"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ).json()  # fmt: skip
        key = httpx.post(
            f"{url}/v1/keys", json={"name": "user", "max_spend_usd": 100},
            headers={"Authorization": f"Bearer {tenant['master_key']}"},
        ).json()  # fmt: skip
        yield Server(url, port, process.pid, key["secret"], tenant["master_key"])
    finally:
        stop(process)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _connect(server: Server, **options: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for name, value in options.items():
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, name), value)
    sock.connect(("127.0.0.1", server.port))
    return sock


def _until_closed(sock: socket.socket, seconds: float = 20) -> bytes:
    """Everything the server sends until it closes the connection (within `seconds`)."""
    sock.settimeout(seconds)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _answers(server: Server) -> bool:
    return httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def _chat_head(server: Server, length: int, stream: bool = False) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {server.secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


class TestSlowClients:
    def test_a_connection_that_sends_nothing_is_closed(self, server: Server):
        with _connect(server) as sock:
            assert _until_closed(sock) == b""  # closed within the header timeout, silently
        assert _answers(server)

    def test_a_trickled_head_gets_408_while_others_are_served(self, server: Server):
        with _connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            stop = threading.Event()

            def trickle() -> None:
                with contextlib.suppress(OSError):
                    while not stop.wait(0.2):
                        sock.sendall(b"X-Slow: y\r\n")  # a header every 0.2 s, never the end

            sender = threading.Thread(target=trickle)
            sender.start()
            try:
                assert _answers(server)  # meanwhile
                received = _until_closed(sock)
            finally:
                stop.set()
                sender.join()
        assert received.startswith(b"HTTP/1.1 408 ")

    def test_a_trickled_body_is_cut_off_and_bills_nothing(
        self, server: Server, upstream: FakeUpstream
    ):
        body = json.dumps({"model": "gpt-4o-mini", "messages": HELLO}).encode()
        before = len(server.logs())
        with _connect(server) as sock:
            sock.sendall(_chat_head(server, len(body)) + body[:10])  # then nothing more
            received = _until_closed(sock)
        assert b"200 OK" not in received
        assert upstream.seen == []
        assert len(server.logs()) == before
        assert _answers(server)

    def test_a_body_over_the_limit_is_refused_before_it_is_sent(self, server: Server):
        with _connect(server) as sock:
            sock.sendall(_chat_head(server, MAX_BODY + 1))  # no body follows
            received = _until_closed(sock)
        assert received.startswith(b"HTTP/1.1 413 ")
        assert b"request_too_large" in received


class TestNeverReadingClient:
    def test_a_stream_nobody_reads_is_cut_off_with_memory_bounded_and_billed_once(
        self, server: Server, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 32_768  # about 5 MB of events
        body = json.dumps({
            "model": "gpt-4.1-mini", "messages": HELLO, "stream": True, "max_tokens": 32_768,
        }).encode()  # fmt: skip
        before_logs = len(server.logs())
        start_rss = server.rss_mb()
        peak = start_rss
        # A small receive window: the server's writes back up almost at once.
        with _connect(server, SO_RCVBUF=4096) as sock:
            sock.sendall(_chat_head(server, len(body)) + body)
            deadline = time.monotonic() + 30
            closed = False
            while time.monotonic() < deadline and not closed:
                peak = max(peak, server.rss_mb())
                assert _answers(server)  # others are served meanwhile
                closed = _peer_closed(server, sock)
                time.sleep(0.2)
            assert closed, "the server kept a stream nobody read"
        assert upstream.disconnects >= 1 or upstream.reported  # the upstream call ended too
        assert peak - start_rss < 40, (start_rss, peak)
        for _ in range(200):  # a stream its client left settles in the background
            logs = server.logs()
            if len(logs) > before_logs:
                break
            time.sleep(0.1)
        assert len(logs) == before_logs + 1
        assert int(str(logs[0]["cost_micros"])) > 0


def _peer_closed(server: Server, sock: socket.socket) -> bool:
    """Whether the server aborted this connection (its socket is gone from the server)."""
    mine = sock.getsockname()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if int(local.split(":")[1], 16) == server.port and int(remote.split(":")[1], 16) == mine:
            return state != "01"  # not ESTABLISHED
    return True


class TestManyIdleConnections:
    def test_ten_thousand_idle_connections_cost_little_and_are_closed(
        self, tmp_path: Path, upstream: FakeUpstream
    ):
        # A longer header timeout here: all of them must be open at once first.
        with _serve(tmp_path, upstream, 20.0) as server:
            self._check(server)

    def _check(self, server: Server) -> None:
        base_files, base_rss = server.open_files(), server.rss_mb()
        sockets: list[socket.socket] = []
        try:
            for _ in range(IDLE):
                sockets.append(_connect(server))
            for _ in range(100):  # the server accepts them all
                if server.open_files() >= base_files + IDLE:
                    break
                time.sleep(0.1)
            assert server.open_files() >= base_files + IDLE
            held_rss = server.rss_mb()
            answer = httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": HELLO},
                headers={"Authorization": f"Bearer {server.secret}"}, timeout=30,
            )  # fmt: skip
            assert answer.status_code == 200
            assert held_rss - base_rss < 120, (base_rss, held_rss)  # about 5 KB a connection
            for _ in range(600):  # each is closed at its header timeout
                if server.open_files() < base_files + 50:
                    break
                time.sleep(0.1)
            assert server.open_files() < base_files + 50
        finally:
            for sock in sockets:
                sock.close()
