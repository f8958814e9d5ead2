"""NAT traversal through a real TURN server: Debian's coturn on loopback, with credentials the
service mints (coturn's ``use-auth-secret`` scheme), handed to the pages in their hello."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aioice.stun
import aioice.turn
import pytest
import redis.asyncio as redis

from services.media.ice import turn_credential
from services.redis_server import RedisServer
from tests.system.test_browser import (
    Call,
    call_on_a_service,
    customer_hears_the_agent,
    start_call,
)
from tests.system.turn_server import TurnServer

pytestmark = pytest.mark.newest_redis

SECRET = "turn-secret-for-the-tests"


@pytest.fixture
def turn(tmp_path: Path) -> Iterator[TurnServer]:
    server = TurnServer(tmp_path / "turn", SECRET)
    server.start()
    yield server
    server.stop()


async def allocate(turn: TurnServer, username: str, password: str) -> tuple[str, int]:
    """A relayed address, allocated on ``turn`` with these credentials."""
    transport, _ = await aioice.turn.create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", turn.port), username, password
    )
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        return relayed
    finally:
        transport.close()


async def test_a_minted_credential_allocates_a_relay_and_an_expired_one_is_refused(
    turn: TurnServer,
) -> None:
    now = int(time.time())

    relayed = await allocate(turn, *turn_credential(SECRET, "agent", now + 60))
    with pytest.raises(aioice.stun.TransactionFailed, match="401"):
        await allocate(turn, *turn_credential(SECRET, "agent", now - 1))
    with pytest.raises(aioice.stun.TransactionFailed, match="401"):
        await allocate(turn, *turn_credential("another-secret", "agent", now + 60))

    assert relayed[0] == "127.0.0.1"


@pytest.fixture
async def relayed_call(
    redis_server: RedisServer, redis_client: redis.Redis, turn: TurnServer, tmp_path: Path
) -> AsyncIterator[Call]:
    relay_only = {
        "turn_urls": (turn.url,),
        "turn_secret": SECRET,
        "ice_transport_policy": "relay",
    }
    async with call_on_a_service(redis_server.url, redis_client, tmp_path, **relay_only) as call:
        yield call


async def test_pages_told_to_relay_reach_the_call_through_coturn(
    relayed_call: Call, turn: TurnServer
) -> None:
    customer, _agent = await start_call(relayed_call)

    await customer_hears_the_agent(customer)
    hello = next(frame for frame in customer.frames if '"type":"hello"' in frame)
    assert '"ice_transport_policy":"relay"' in hello
    assert turn.url in hello
    log = turn.log()
    for subject in ("cust", "agent"):  # each page relayed with the credential minted for it
        assert f":{subject}>" in log, log[-2000:]
