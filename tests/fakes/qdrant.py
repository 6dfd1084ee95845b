"""A Qdrant server on loopback for the tests: the REST routes Tollgate's `QdrantStore` uses,
answered by qdrant-client's own local mode (in memory), so the real `AsyncQdrantClient` talks
HTTP to it. `go_down()` closes its port (and cuts the connections open to it), as a Qdrant that
died; `come_back()` listens again on the same port with the same points. No Qdrant server can be
installed on the development machines (see the infrastructure notes)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from qdrant_client import QdrantClient, models

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _ok(result: Any) -> web.Response:
    return web.json_response({"result": result, "status": "ok", "time": 0.0})


def _updated() -> web.Response:
    return _ok({"operation_id": 0, "status": "completed"})


class FakeQdrant:
    def __init__(self) -> None:
        self.client = QdrantClient(location=":memory:")
        self.indexes: dict[str, dict[str, Any]] = {}  # field -> schema asked for
        self.hnsw: dict[str, Any] | None = None
        self.port = 0
        self.down = False
        self._loop = asyncio.new_event_loop()
        self._site: web.TCPSite | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeQdrant:
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the fake Qdrant did not start")
        return self

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(middlewares=[self._outage], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/readyz", self._readyz)
        name = "/collections/{name}"
        app.router.add_get(name + "/exists", self._exists)
        app.router.add_put(name, self._create)
        app.router.add_delete(name, self._drop)
        app.router.add_put(name + "/index", self._index)
        app.router.add_put(name + "/points", self._upsert)
        app.router.add_post(name + "/points/delete", self._delete)
        app.router.add_post(name + "/points/query", self._query)
        app.router.add_post(name + "/points/count", self._count)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(self._listen())
        started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _call(self, coroutine: Awaitable[None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)  # type: ignore[arg-type]

    def go_down(self) -> None:
        async def close() -> None:
            self.down = True
            if self._site is not None:
                await self._site.stop()

        self._call(close())

    def come_back(self) -> None:
        async def reopen() -> None:
            await self._listen()
            self.down = False

        self._call(reopen())

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.client.close()

    # what the tests read ---------------------------------------------------------------------
    def point_ids(self, collection: str) -> list[str]:
        if not self.client.collection_exists(collection):
            return []
        records, _ = self.client.scroll(collection, limit=1_000_000, with_payload=False)
        return [str(record.id) for record in records]

    # routes ----------------------------------------------------------------------------------
    @web.middleware
    async def _outage(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.down:  # a connection kept alive from before: cut it, as a dead server would
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable()
        name = request.match_info.get("name")
        creates = request.method == "PUT" and request.path == f"/collections/{name}"
        asks = creates or request.path.endswith("/exists")
        if name is not None and not asks and not self.client.collection_exists(name):
            error = {"status": {"error": f"Not found: Collection `{name}` doesn't exist!"}}
            return web.json_response({**error, "time": 0.0}, status=404)
        return await handler(request)

    async def _readyz(self, request: web.Request) -> web.Response:
        return web.Response(text="all shards are ready")

    async def _exists(self, request: web.Request) -> web.Response:
        return _ok({"exists": self.client.collection_exists(request.match_info["name"])})

    async def _create(self, request: web.Request) -> web.Response:
        body = models.CreateCollection.model_validate(await request.json())
        assert isinstance(body.vectors, models.VectorParams)
        self.hnsw = body.hnsw_config.model_dump(exclude_none=True) if body.hnsw_config else None
        self.client.create_collection(request.match_info["name"], vectors_config=body.vectors)
        return _ok(True)

    async def _drop(self, request: web.Request) -> web.Response:
        return _ok(self.client.delete_collection(request.match_info["name"]))

    async def _index(self, request: web.Request) -> web.Response:
        body = await request.json()  # local mode has no payload indexes: recorded only
        self.indexes[body["field_name"]] = body["field_schema"]
        return _updated()

    async def _upsert(self, request: web.Request) -> web.Response:
        body = models.PointsList.model_validate(await request.json())
        self.client.upsert(request.match_info["name"], body.points)
        return _updated()

    async def _delete(self, request: web.Request) -> web.Response:
        raw = await request.json()
        selector: models.PointIdsList | models.FilterSelector
        if "points" in raw:
            selector = models.PointIdsList.model_validate(raw)
        else:
            selector = models.FilterSelector.model_validate(raw)
        self.client.delete(request.match_info["name"], selector)
        return _updated()

    async def _query(self, request: web.Request) -> web.Response:
        body = models.QueryRequest.model_validate(await request.json())
        response = self.client.query_points(
            request.match_info["name"], query=body.query, query_filter=body.filter,
            limit=body.limit or 10, score_threshold=body.score_threshold, with_payload=False,
        )  # fmt: skip
        return _ok({"points": [p.model_dump(mode="json") for p in response.points]})

    async def _count(self, request: web.Request) -> web.Response:
        body = models.CountRequest.model_validate(await request.json())
        result = self.client.count(request.match_info["name"], count_filter=body.filter)
        return _ok({"count": result.count})
