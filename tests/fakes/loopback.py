"""The harness the native-format fakes share with `upstream.py`'s style: an aiohttp app on a
loopback port, served from its own event loop in a thread (so blocking SDK clients cannot starve
it), steered through plain attributes, recording what it saw."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.upstream import fixture


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    body: dict[str, Any]
    headers: dict[str, str]
    peer: int = 0  # the client's port: one per connection


def http_fixture(path: str) -> tuple[int, dict[str, str], bytes]:
    """An `.http` fixture: status, headers (content-length dropped), body."""
    head, _, body = fixture(path).partition(b"\n\n")
    lines = head.decode().splitlines()
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers.pop("content-length", None)
    return int(lines[0].split()[1]), headers, body


class LoopbackServer:
    """Subclasses add their routes in `routes(app)`."""

    port: int = 0

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def start(self) -> LoopbackServer:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fake upstream did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
