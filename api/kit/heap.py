"""The start-up heap, moved out of the garbage collector's way.

A long-running process keeps what it built at start-up (modules, the app, pools, compiled
statements) for its whole life: some 170,000 container objects for `tollgate serve`. Every
full collection walks all of them, which measured 90 to 130 ms of stalled event loop on a
2-core machine, and such collections come every so often under steady load. Frozen after
start-up (`gc.freeze`), they are left out of every collection: a full one then walks only
what requests made since, in milliseconds. Garbage left from start-up is collected first.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any


def freeze_startup() -> None:
    """Collect start-up garbage, then exempt everything alive from future collections."""
    gc.collect()
    gc.freeze()


def frozen_after(
    lifespan: Callable[[Any], AbstractAsyncContextManager[Any]],
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """`lifespan`, freezing the heap once its start-up is done, before the server listens."""

    @asynccontextmanager
    async def frozen(app: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            freeze_startup()
            yield state

    return frozen
