"""`tollgate serve` freezes the heap its app built at start-up, before it serves."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from api.kit.heap import frozen_after


async def test_the_heap_is_frozen_once_start_up_is_done() -> None:
    seen: list[int] = []

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[dict[str, int]]:
        seen.append(gc.get_freeze_count())  # start-up: nothing frozen yet
        yield {"state": 1}
        seen.append(gc.get_freeze_count())

    gc.unfreeze()
    try:
        async with frozen_after(lifespan)(object()) as state:
            assert state == {"state": 1}
            assert gc.get_freeze_count() > 0  # before the first request
        assert seen[0] == 0
        assert seen[1] > 0
    finally:
        gc.unfreeze()
