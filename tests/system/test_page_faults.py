"""The pages through a kill -9 of the service: they say so, and are back on the call by themselves.

The customer, the agent and a supervisor are on their pages, each in a Chromium of their own
with a tone of their own for a microphone, on ``earpiece serve`` run as a child process
(``ServiceProcess``). The coach whispers with push-to-talk held (the spacebar down). The service
is killed with SIGKILL and started again on the same port and Redis. Every page must say it is
reconnecting, then be back on the call by itself, on new WHIP and WHEP sessions, without a
reload; the call's audio must flow again. The console must not reopen its microphone to
whisper: the agent hears the coach again only once the coach has clicked Whisper and held the
spacebar anew. The customer's page never hears the coach's tone, before, during or after.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from tests.system.browser_support import PageUnderTest
from tests.system.processes import ServiceProcess
from tests.system.test_browser import (
    HEARD_DB,
    SILENT_DB,
    TONES,
    Call,
    assert_nothing_of_supervisors,
    badge,
    customer_hears_the_agent,
    hears,
    monitor,
    start_call,
    until,
)

pytestmark = pytest.mark.newest_redis

RECONNECTING = "Connection lost: reconnecting…"
ON_CALL = {
    "cust": "You are connected.",
    "agent": "On the call.",
    "sup-1": "Connected as Sam Super.",
}
PAGE_WAIT_MS = 15_000
BACK_WITHIN_S = 15.0
"""Each page is back on the call within this long of the restarted service answering."""

# The page's status says it is on the call, and the two newest of its peer connections, made
# after `before` of them, are both connected: new WHIP and WHEP sessions.
BACK_ON_CALL = """([status, before]) => {
  const pcs = window.__probe.connections;
  return document.querySelector("#status").textContent === status
    && pcs.length >= before + 2
    && pcs.slice(-2).every((pc) => pc.connectionState === "connected");
}"""
CONNECTIONS = "window.__probe.connections.length"
# Every status the page shows from now on, and whether it then had new sessions, connected.
RECORD_STATUSES = """(before) => {
  window.__said = [];
  const status = document.querySelector("#status");
  new MutationObserver(() => {
    const pcs = window.__probe.connections;
    const fresh = pcs.length >= before + 2
      && pcs.slice(-2).every((pc) => pc.connectionState === "connected");
    window.__said.push([status.textContent, fresh]);
  }).observe(status, { childList: true, characterData: true, subtree: true });
}"""
MIC_ENABLED = """window.__probe.connections
  .filter((pc) => pc.connectionState !== "closed")
  .flatMap((pc) => pc.getSenders())
  .filter((sender) => sender.track)
  .map((sender) => sender.track.enabled)"""


@pytest.fixture
async def call(served: ServiceProcess, tmp_path: Path) -> AsyncIterator[Call]:
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
        async_playwright() as playwright,
    ):
        opened = Call(http, playwright, tmp_path)
        try:
            yield opened
        finally:
            await opened.close()


def commands_sent(page: PageUnderTest, command: str) -> int:
    """How many times the page's sockets carried ``command`` (only pages send commands)."""
    return sum(frame.count(f'"command":"{command}"') for frame in page.frames)


async def back_on_call(page: PageUnderTest, subject: str, before: int, since: float) -> float:
    """Seconds from ``since`` until the page is on the call on connections of its own again."""
    await page.page.wait_for_function(
        BACK_ON_CALL, arg=[ON_CALL[subject], before], timeout=PAGE_WAIT_MS, polling=100
    )
    return time.monotonic() - since


async def test_after_kill_9_every_page_reconnects_by_itself_and_the_coach_stays_silent(
    served: ServiceProcess, call: Call
) -> None:
    customer, agent = await start_call(call)
    console = await monitor(call, "sup-1", "Push-to-talk")
    pages = {"cust": customer, "agent": agent, "sup-1": console}
    await customer_hears_the_agent(customer)
    await console.page.get_by_role("button", name="Whisper", exact=True).click()
    await expect(console.page.get_by_text("Whisper on: hold to talk.")).to_be_visible()
    await console.page.keyboard.down("Space")  # and held, through the kill
    await expect(badge(agent, "sup-1")).to_be_visible()
    whispered, customer_before = await asyncio.gather(
        until(lambda: hears(agent, TONES["sup-1"]), lambda h: h[TONES["sup-1"]] >= HEARD_DB),
        hears(customer, TONES["agent"], TONES["sup-1"], ms=2000),
    )
    assert whispered[TONES["sup-1"]] >= HEARD_DB, whispered
    assert customer_before[TONES["sup-1"]] < SILENT_DB, customer_before
    before = {subject: await page.page.evaluate(CONNECTIONS) for subject, page in pages.items()}
    presses = commands_sent(console, "press_talk"), commands_sent(console, "start_whisper")
    for subject, page in pages.items():
        await page.page.evaluate(RECORD_STATUSES, before[subject])

    served.kill()
    killed = time.monotonic()
    restarting = asyncio.create_task(asyncio.to_thread(served.start))
    try:
        for page in pages.values():
            await expect(page.page.locator("#status")).to_have_text(
                RECONNECTING, timeout=PAGE_WAIT_MS
            )
    finally:
        await restarting
    answering_s = time.monotonic() - killed
    back = dict(
        zip(
            pages,
            await asyncio.gather(
                *(back_on_call(page, s, before[s], killed) for s, page in pages.items())
            ),
            strict=True,
        )
    )
    print(  # shown with -rP: the numbers the report gives
        f"\nkill -9 → service answering again: {answering_s:.1f} s; back on the call: "
        + ", ".join(f"{subject} {seconds:.1f} s" for subject, seconds in back.items())
    )
    assert max(back.values()) - answering_s < BACK_WITHIN_S, (answering_s, back)
    for subject, page in pages.items():
        said = [tuple(entry) for entry in await page.page.evaluate("window.__said")]
        assert said[0] == (RECONNECTING, False), said
        # Not on the call until it was, on new sessions: not when only the socket came back.
        assert all(fresh for text, fresh in said if text == ON_CALL[subject]), (subject, said)

    # The call's audio flows again, both ways.
    heard = await until(lambda: hears(agent, TONES["cust"]), lambda h: h[500.0] >= HEARD_DB)
    assert heard[TONES["cust"]] >= HEARD_DB, heard
    await customer_hears_the_agent(customer)
    # The coach is back in monitor, with the microphone shut and the spacebar (still held)
    # let go of in the page: nothing was asked for again by the page itself.
    await expect(console.page.get_by_text("Monitoring: you hear the call.")).to_be_visible()
    await expect(console.page.get_by_role("button", name="Whisper", exact=True)).to_be_visible()
    await expect(console.page.locator("#talk")).not_to_have_class(re.compile(r"\bon\b"))
    assert await console.page.evaluate(MIC_ENABLED) == [False]
    assert (commands_sent(console, "press_talk"), commands_sent(console, "start_whisper")) == (
        presses
    )
    silent, customer_after = await asyncio.gather(
        hears(agent, TONES["cust"], TONES["sup-1"], ms=2000),
        hears(customer, TONES["agent"], TONES["sup-1"], ms=2000),
    )
    assert silent[TONES["cust"]] >= HEARD_DB, silent
    assert silent[TONES["sup-1"]] < SILENT_DB, silent
    assert customer_after[TONES["agent"]] >= HEARD_DB, customer_after
    assert customer_after[TONES["sup-1"]] < SILENT_DB, customer_after
    await expect(badge(agent, "sup-1")).to_be_hidden()

    # The key's auto-repeat and its release press nothing, nor click the focused Whisper button.
    await expect(console.page.locator("#whisper")).to_be_focused()
    await console.page.keyboard.down("Space")  # held: a repeat
    await console.page.keyboard.up("Space")
    await expect(console.page.get_by_text("Monitoring: you hear the call.")).to_be_visible()
    assert (commands_sent(console, "press_talk"), commands_sent(console, "start_whisper")) == (
        presses
    )

    # Only when the coach asks again does the agent hear them; the customer still does not.
    await console.page.get_by_role("button", name="Whisper", exact=True).click()
    await expect(console.page.get_by_text("Whisper on: hold to talk.")).to_be_visible()
    assert await console.page.evaluate(MIC_ENABLED) == [True]
    await console.page.keyboard.down("Space")
    await expect(badge(agent, "sup-1")).to_be_visible()
    again, customer_again = await asyncio.gather(
        until(lambda: hears(agent, TONES["sup-1"]), lambda h: h[TONES["sup-1"]] >= HEARD_DB),
        hears(customer, TONES["agent"], TONES["sup-1"], ms=3000),
    )
    await console.page.keyboard.up("Space")
    assert again[TONES["sup-1"]] >= HEARD_DB, again
    assert customer_again[TONES["agent"]] >= HEARD_DB, customer_again
    assert customer_again[TONES["sup-1"]] < SILENT_DB, customer_again
    assert_nothing_of_supervisors(customer, await customer.dom_history())


async def test_a_hang_up_is_not_reconnected_when_the_service_comes_back(
    served: ServiceProcess, call: Call
) -> None:
    customer, agent = await start_call(call)
    await customer.page.get_by_role("button", name="Hang up").click()
    await expect(customer.page.locator("#status")).to_have_text(
        "You left the call. Join again if you need to."
    )
    await expect(agent.page.locator("#status")).to_have_text(
        "In the call. Waiting for the customer…"
    )
    before = await customer.page.evaluate(CONNECTIONS)
    agent_before = await agent.page.evaluate(CONNECTIONS)

    served.kill()
    killed = time.monotonic()
    await asyncio.to_thread(served.start)
    waiting = "In the call. Waiting for the customer…"
    await agent.page.wait_for_function(
        BACK_ON_CALL, arg=[waiting, agent_before], timeout=PAGE_WAIT_MS, polling=100
    )
    print(f"\nkill -9 → the agent's desk back, waiting: {time.monotonic() - killed:.1f} s")
    # The customer's page is back on its socket, and still out of the call it left.
    await expect(customer.page.get_by_role("button", name="Join the call")).to_be_enabled()
    await expect(customer.page.locator("#status")).to_have_text(
        "You left the call. Join again if you need to."
    )
    assert "Connection lost: reconnecting…" in await customer.dom_history()
    assert await customer.page.evaluate(CONNECTIONS) == before


async def test_the_call_comes_back_after_kill_9_even_once_the_links_tokens_have_expired(
    served: ServiceProcess, call: Call
) -> None:
    """Customers and agents reconnect with the resume tokens their live socket handed them."""
    call.expires_at = int(time.time()) + 8
    customer, agent = await start_call(call)
    await customer_hears_the_agent(customer)
    pages = {"cust": customer, "agent": agent}
    before = {subject: await page.page.evaluate(CONNECTIONS) for subject, page in pages.items()}
    async with asyncio.timeout(30):  # the links' tokens are no good from here on
        while time.time() < call.expires_at + 1:
            await asyncio.sleep(0.2)

    served.kill()
    killed = time.monotonic()
    await asyncio.to_thread(served.start)
    back = await asyncio.gather(
        *(back_on_call(page, s, before[s], killed) for s, page in pages.items())
    )
    print(f"\nkill -9 → back on the call on resume tokens: {max(back):.1f} s")
    heard = await until(lambda: hears(agent, TONES["cust"]), lambda h: h[500.0] >= HEARD_DB)
    assert heard[TONES["cust"]] >= HEARD_DB, heard
    await customer_hears_the_agent(customer)
