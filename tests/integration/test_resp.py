"""The pipelined Redis connection used for the per-request scripts, against a real server."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.kit.resp import PipelinedRedis, Script, pack
from tools.testenv import free_port


def test_pack_is_resp():
    assert pack(("SET", b"k", 12)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"
    assert pack(("ECHO", "é")) == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"


async def test_concurrent_commands_get_their_own_replies(redis_url: str):
    client = PipelinedRedis(redis_url)
    await client.execute("DEL", "resp:n")
    replies = await asyncio.gather(*(client.execute("INCRBY", "resp:n", i) for i in range(1, 201)))
    assert replies == [i * (i + 1) // 2 for i in range(1, 201)]  # in order, none mixed up
    with pytest.raises(ResponseError):
        await client.execute("INCR", "resp:n", "extra")  # wrong arity: Redis's own error
    assert await client.execute("GET", "resp:n") == b"20100"  # the connection is still in step
    await client.close()


async def test_scripts_load_themselves_and_see_the_selected_database(redis_url: str):
    url = redis_url.rsplit("/", 1)[0] + "/3"
    client = PipelinedRedis(url)
    other = Redis.from_url(url)
    await other.script_flush()
    script = Script(client, "return redis.call('SET', KEYS[1], ARGV[1])")
    assert await script(["resp:s"], ["v"]) == b"OK"  # NOSCRIPT, then EVAL
    assert await script(["resp:s"], ["w"]) == b"OK"  # EVALSHA
    assert await other.get("resp:s") == b"w"  # database 3, not 0
    await other.aclose()
    await client.close()


async def test_a_lost_connection_fails_what_is_in_flight_then_reconnects(redis_url: str):
    client = PipelinedRedis(redis_url)
    admin = Redis.from_url(redis_url)
    await client.execute("CLIENT", "SETNAME", "resp-victim")
    blocked = asyncio.ensure_future(client.execute("BLPOP", "resp:never", 5))
    await asyncio.sleep(0.1)
    for entry in await admin.client_list():
        if entry.get("name") == "resp-victim":
            await admin.client_kill(entry["addr"])
    with pytest.raises(RedisConnectionError):
        await blocked
    assert await client.execute("PING") == b"PONG"
    await admin.aclose()
    await client.close()


async def test_a_server_that_never_answers_times_out():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(5)
        writer.close()

    port = free_port()
    server = await asyncio.start_server(silent, "127.0.0.1", port)
    client = PipelinedRedis(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.2)
    with pytest.raises(RedisTimeoutError):
        await client.execute("PING")
    await client.close()
    server.close()


async def test_nothing_listening_is_a_connection_error():
    client = PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0", timeout_seconds=0.5)
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")
