"""The typed state `lifespan` yields; dependencies read it from `request.state`."""

from __future__ import annotations

from typing import TypedDict

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.auth.cache import KeyCache
from api.gateway.pipeline import Gateway
from api.kit.crypto import SecretBox
from api.search.runtime import Search
from api.settings import Settings
from api.thread.turns import TurnContext


class AppState(TypedDict):
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    pepper: bytes
    redis: Redis | None
    gateway: Gateway
    key_cache: KeyCache
    secret_box: SecretBox
    turns: TurnContext
    search: Search
