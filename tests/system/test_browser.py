"""The three pages in a real Chromium, with real (fake-device) microphones, on loopback.

Each speaker runs in a Chromium of their own whose microphone plays a tone of their own; what
a page hears is measured inside it, on the spectrum of every track it received. A supervisor's
tone must reach the agent when, and only when, the console says so, and never the customer,
whose page and WebSocket traffic must not even name a supervisor. The tests also take the
screenshots shown in the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from playwright.async_api import (
    Browser,
    Playwright,
    ViewportSize,
    async_playwright,
    expect,
)

from events.room import Role
from services.redis_server import RedisServer
from tests.support import REPO, running_service, token
from tests.system.browser_support import PROBE, PageUnderTest, launch_speaker, write_tone

pytestmark = pytest.mark.newest_redis

TONES = {"cust": 500.0, "agent": 800.0, "sup-1": 2500.0, "sup-2": 3500.0}
PATHS = {"cust": "call", "agent": "desk", "sup-1": "console", "sup-2": "console"}
ROLES = {"cust": Role.CUSTOMER, "agent": Role.AGENT}
NAMES = {
    "cust": "Casey Customer",
    "agent": "Alex Agent",
    "sup-1": "Sam Super",
    "sup-2": "Robin Lead",
}
HEARD_DB = -15.0
"""A tone holding at least this share of a track's energy is heard (measured: 0 to -5 dB)."""
SILENT_DB = -45.0
"""A tone under this share is not. In Chromium a received tone has a skirt of codec noise
that falls with distance: with only the agent's 800 Hz on the line, the customer's track
holds -37 dB within 25 Hz of 650 Hz, -47 to -53 dB at 1300 Hz and -60 to -65 dB at 3000 Hz.
The supervisors' tones are kept far from the call's, where the floor is 15 dB below this."""
SCREENSHOTS = REPO / "docs" / "screenshots"

# Page waits get room for a loaded 2-core machine running four Chromiums and the service; the
# one latency the issue asks of the badge (1 s) is asserted where it is measured.
expect.set_options(timeout=15_000)


class Call:
    """The people of room-1, each on their page in a Chromium of their own."""

    def __init__(self, http: httpx.AsyncClient, playwright: Playwright, tmp: Path) -> None:
        self.http = http
        """A client of the service, whose base URL the pages are opened at."""
        self.playwright = playwright
        self.tmp = tmp
        self.browsers: list[Browser] = []
        self.pages: dict[str, PageUnderTest] = {}
        self.queue: str | None = None
        """The queue the customer's and agent's tokens name, if any."""
        self.lobby_queues: list[str] | None = None
        """Supervisors' tokens are ``*`` tokens for these queues, opening the lobby, if set."""
        self.expires_at: int | None = None
        """When the customer's and agent's tokens expire (Unix time), if not in an hour."""

    def link(self, subject: str) -> str:
        role = ROLES.get(subject, Role.SUPERVISOR)
        base = f"{self.http.base_url}/{PATHS[subject]}"
        name = NAMES[subject]
        if role is not Role.SUPERVISOR:
            claims: dict[str, object] = {} if self.queue is None else {"queue": self.queue}
            if self.expires_at is not None:
                claims["exp"] = self.expires_at
            credential = token(role, sub=subject, name=name, **claims)
            return f"{base}#room=room-1&token={credential}"
        if self.lobby_queues is None:
            return f"{base}#room=room-1&token={token(role, sub=subject, name=name, whisper=True)}"
        lobby = token(
            role, room="*", sub=subject, name=name, whisper=True, queues=self.lobby_queues
        )
        return f"{base}#token={lobby}"

    async def open(self, subject: str, *tones: float) -> PageUnderTest:
        """``subject``'s page, in a Chromium whose microphone plays their tone (or ``tones``)."""
        tone = write_tone(self.tmp / f"{subject}.wav", *(tones or [TONES[subject]]))
        browser = await launch_speaker(self.playwright, tone)
        self.browsers.append(browser)
        size = (
            ViewportSize(width=560, height=400)
            if subject == "cust"
            else ViewportSize(width=1180, height=760)
        )
        context = await browser.new_context(viewport=size)
        await context.add_init_script(PROBE)
        page = PageUnderTest(await context.new_page())
        link = self.link(subject)
        await page.page.goto(link)
        await page.page.wait_for_function("location.hash === ''")  # the token left the address
        page.secret = link.partition("token=")[2]
        self.pages[subject] = page
        return page

    async def command(self, room: str, bearer: str, command: str, **fields: object) -> None:
        """A command over HTTP, as another system would send it; it must be stored (201)."""
        response = await self.http.post(
            f"/rooms/{room}/commands",
            json={"command": command, **fields},
            headers={"Authorization": f"Bearer {bearer}"},
        )
        assert response.status_code == 201, response.text

    async def close(self) -> None:
        await asyncio.gather(*(browser.close() for browser in self.browsers))


@contextlib.asynccontextmanager
async def call_on_a_service(
    redis_url: str, client: redis.Redis, tmp: Path, **settings: object
) -> AsyncIterator[Call]:
    """A Call whose pages are served by the whole app with ``settings``, run here."""
    async with running_service(redis_url, client, **settings) as service, async_playwright() as pw:
        opened = Call(service.http, pw, tmp)
        try:
            yield opened
        finally:
            await opened.close()


@pytest.fixture
async def call(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> AsyncIterator[Call]:
    async with call_on_a_service(redis_server.url, redis_client, tmp_path) as opened:
        yield opened


async def until(
    measure: Callable[[], Awaitable[Any]], condition: Callable[[Any], bool], within: float = 8.0
) -> Any:
    """Measure again until ``condition`` holds of the result; the last result after ``within``."""
    deadline = time.monotonic() + within
    while True:
        result = await measure()
        if condition(result) or time.monotonic() > deadline:
            return result


def loudest(levels: list[dict[float, float]], hz: float) -> float:
    return max((track[hz] for track in levels), default=float("-inf"))


async def hears(page: PageUnderTest, *tones: float, ms: int = 600) -> dict[float, float]:
    """The loudest share of each tone in any track the page receives, over ``ms`` of audio."""
    levels = await page.tone_levels(list(tones), ms)
    return {hz: loudest(levels, hz) for hz in tones}


async def customer_hears_the_agent(customer: PageUnderTest) -> None:
    """Wait for the call's audio at the customer, so that a later silent window means silence."""
    levels = await until(
        lambda: hears(customer, TONES["agent"]), lambda h: h[TONES["agent"]] >= HEARD_DB
    )
    assert levels[TONES["agent"]] >= HEARD_DB, levels


async def start_call(call: Call, *agent_tones: float) -> tuple[PageUnderTest, PageUnderTest]:
    customer, agent = await call.open("cust"), await call.open("agent", *agent_tones)
    for page in (customer, agent):
        await page.page.get_by_role("button", name="Join the call").click()
    await expect(customer.page.get_by_text("You are speaking with Alex Agent")).to_be_visible()
    await expect(agent.page.get_by_text("Customer: Casey Customer")).to_be_visible()
    return customer, agent


async def monitor(call: Call, subject: str, mode: str) -> PageUnderTest:
    console = await call.open(subject)
    await console.page.get_by_role("button", name="Join and monitor").click()
    await expect(console.page.get_by_text("Monitoring: you hear the call.")).to_be_visible()
    await console.page.get_by_label(mode).check()
    return console


def badge(agent: PageUnderTest, subject: str) -> Any:
    return agent.page.locator(f'.badge[data-coach="{subject}"] .whisper-active')


def assert_no_token_in_a_url(call: Call) -> None:
    """Pages, modules, WHIP/WHEP and the WebSocket: no URL any page asked for has its token."""
    for page in call.pages.values():
        assert page.urls
        assert not [url for url in page.urls if page.secret in url]


def assert_nothing_of_supervisors(customer: PageUnderTest, html: str) -> None:
    traffic = "".join(customer.frames)
    assert "Alex Agent" in traffic  # the page did hear from the server,
    assert "Alex Agent" in html  # and drew it
    for secret in ("sup-1", "sup-2", "Sam Super", "Robin Lead", "Sup-"):
        assert secret not in html
        assert secret not in traffic


async def test_one_click_whispers_to_the_agent_within_a_second_and_never_to_the_customer(
    call: Call,
) -> None:
    customer, agent = await start_call(call)
    console = await monitor(call, "sup-1", "Open mic")
    levels = await until(lambda: hears(agent, TONES["cust"]), lambda h: h[500.0] >= HEARD_DB)
    assert levels[TONES["cust"]] >= HEARD_DB
    assert (await hears(agent, TONES["sup-1"]))[TONES["sup-1"]] < SILENT_DB
    await customer_hears_the_agent(customer)

    clicked = time.monotonic()
    await console.page.get_by_role("button", name="Whisper", exact=True).click()
    await expect(badge(agent, "sup-1")).to_be_visible(timeout=1_000)
    badge_after = time.monotonic() - clicked

    # The customer listens from the switch on, through the moment the coach's route is made.
    agent_hears, customer_hears = await asyncio.gather(
        until(lambda: hears(agent, TONES["sup-1"]), lambda h: h[TONES["sup-1"]] >= HEARD_DB),
        hears(customer, TONES["agent"], TONES["sup-1"], ms=3000),
    )
    assert badge_after < 1.0
    assert agent_hears[TONES["sup-1"]] >= HEARD_DB, agent_hears
    assert customer_hears[TONES["agent"]] >= HEARD_DB, customer_hears
    assert customer_hears[TONES["sup-1"]] < SILENT_DB, customer_hears
    await expect(agent.page.locator('.badge[data-coach="sup-1"]')).to_contain_text("Sam Super")
    # Screen readers hear the change once, in words; the redrawn badges are not a live region.
    announcer = agent.page.locator("#announcer")
    await expect(announcer).to_have_text("Sam Super is whispering to you.")
    live = await agent.page.eval_on_selector_all(
        "[aria-live], [role=status], [role=alert], [role=log]", "nodes => nodes.map(n => n.id)"
    )
    assert live == ["status", "alert", "announcer"]

    await console.page.get_by_role("button", name="Stop whisper").click()  # and back
    await expect(badge(agent, "sup-1")).to_be_hidden()
    await expect(announcer).to_have_text("Sam Super stopped whispering.")
    await expect(console.page.get_by_text("Monitoring: you hear the call.")).to_be_visible()
    silent = await until(
        lambda: hears(agent, TONES["sup-1"]), lambda h: h[TONES["sup-1"]] < SILENT_DB
    )
    assert silent[TONES["sup-1"]] < SILENT_DB
    assert_nothing_of_supervisors(customer, await customer.dom_history())
    assert_no_token_in_a_url(call)


async def test_push_to_talk_with_the_spacebar_and_mute_silence_the_coach(call: Call) -> None:
    customer, agent = await start_call(call)
    console = await monitor(call, "sup-1", "Push-to-talk")
    await customer_hears_the_agent(customer)
    await console.page.get_by_role("button", name="Whisper", exact=True).click()
    await expect(console.page.get_by_text("Whisper on: hold to talk.")).to_be_visible()
    assert (await hears(agent, TONES["sup-1"]))[TONES["sup-1"]] < SILENT_DB
    await expect(badge(agent, "sup-1")).to_be_hidden()

    await console.page.keyboard.down("Space")  # focus is still on the Whisper button
    await expect(badge(agent, "sup-1")).to_be_visible()
    talking, customer_hears = await asyncio.gather(
        until(lambda: hears(agent, TONES["sup-1"]), lambda h: h[TONES["sup-1"]] >= HEARD_DB),
        hears(customer, TONES["agent"], TONES["sup-1"], ms=3000),
    )
    await console.page.keyboard.up("Space")
    await expect(badge(agent, "sup-1")).to_be_hidden()
    released = await until(
        lambda: hears(agent, TONES["sup-1"]), lambda h: h[TONES["sup-1"]] < SILENT_DB
    )
    assert talking[TONES["sup-1"]] >= HEARD_DB, talking
    assert customer_hears[TONES["agent"]] >= HEARD_DB, customer_hears
    assert customer_hears[TONES["sup-1"]] < SILENT_DB, customer_hears
    assert released[TONES["sup-1"]] < SILENT_DB, released
    await expect(console.page.get_by_role("button", name="Stop whisper")).to_be_visible()
    # The console's own view of the release comes first: it redraws the mode switch.
    await expect(console.page.locator("#talk")).to_have_attribute("aria-pressed", "false")

    await console.page.get_by_label("Open mic").check()
    await expect(badge(agent, "sup-1")).to_be_visible()
    await console.page.get_by_role("button", name="Mute", exact=True).click()
    await expect(badge(agent, "sup-1")).to_be_hidden()
    muted = await until(
        lambda: hears(agent, TONES["sup-1"]), lambda h: h[TONES["sup-1"]] < SILENT_DB
    )
    assert muted[TONES["sup-1"]] < SILENT_DB
    # The desk shows the coach silenced and offers nothing to undo it: only the coach can unmute.
    silenced = agent.page.locator('.badge[data-coach="sup-1"] .badge-state')
    await expect(silenced).to_have_text("silenced: only the coach can unmute")
    await expect(agent.page.locator(".badges button")).to_have_count(0)
    await console.page.get_by_role("button", name="Unmute", exact=True).click()
    await expect(badge(agent, "sup-1")).to_be_visible()
    # The agent silences the coach: the console says who did it, not just "muted".
    await agent.page.locator('.badge[data-coach="sup-1"] button').click()
    await expect(badge(agent, "sup-1")).to_be_hidden()
    await expect(console.page.locator("#me")).to_have_text(
        "The agent muted you: the agent does not hear you until you unmute."
    )
    assert_nothing_of_supervisors(customer, await customer.dom_history())


async def test_two_supervisors_coach_at_once_and_a_cue_comes_back_acknowledged(
    call: Call,
) -> None:
    customer, agent = await start_call(call)
    sam = await monitor(call, "sup-1", "Open mic")
    robin = await monitor(call, "sup-2", "Open mic")
    await customer_hears_the_agent(customer)
    for console in (sam, robin):
        await console.page.get_by_role("button", name="Whisper", exact=True).click()
    for subject in ("sup-1", "sup-2"):
        await expect(badge(agent, subject)).to_be_visible()
    both, customer_hears = await asyncio.gather(
        until(
            lambda: hears(agent, TONES["sup-1"], TONES["sup-2"]),
            lambda h: min(h.values()) >= HEARD_DB,
        ),
        hears(customer, TONES["agent"], TONES["sup-1"], TONES["sup-2"], ms=3000),
    )
    assert min(both.values()) >= HEARD_DB, both
    assert customer_hears[TONES["agent"]] >= HEARD_DB, customer_hears
    assert max(customer_hears[TONES["sup-1"]], customer_hears[TONES["sup-2"]]) < SILENT_DB, (
        customer_hears
    )
    robin_row = sam.page.locator('#coaches tr[data-coach="sup-2"]')
    await expect(robin_row).to_contain_text("whispering — the agent hears them")

    await sam.page.get_by_label("Cue text").fill("Offer the loyalty discount now.")
    await sam.page.get_by_role("button", name="Send cue").click()
    cue = agent.page.locator(".cue", has_text="Offer the loyalty discount now.")
    await expect(cue).to_contain_text("from Sam Super")
    await expect(agent.page.locator("#announcer")).to_have_text(
        "Cue from Sam Super: Offer the loyalty discount now."
    )
    await cue.get_by_role("button", name="Acknowledge").click()
    for console in (sam, robin):
        await expect(console.page.locator(".cue.done")).to_contain_text("Acknowledged by the agent")
    await robin.page.get_by_label("Cue text").fill("Confirm the address before you close.")
    await robin.page.keyboard.press("Control+Enter")
    await expect(agent.page.locator(".cue:not(.done)")).to_contain_text("from Robin Lead")

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await customer.page.screenshot(path=SCREENSHOTS / "call.png")
    await agent.page.screenshot(path=SCREENSHOTS / "desk.png")
    await sam.page.screenshot(path=SCREENSHOTS / "console.png", full_page=True)
    assert_nothing_of_supervisors(customer, await customer.dom_history())


async def test_chromium_sends_wideband_opus_at_the_bitrate_the_answer_asks_for(
    call: Call,
) -> None:
    """The answer's fmtp: ``maxplaybackrate=16000`` (so nothing above 8 kHz), 32 kbps, mono.

    Checked once by hand: with ``maxplaybackrate`` left out of the answer, the agent's 11 kHz
    reaches the customer at -9 dB; with it, it is gone.
    """
    above_wideband = 11_000.0
    customer, agent = await start_call(call, TONES["agent"], above_wideband)
    before = await until(agent.outbound, lambda s: s is not None and s["bytesSent"] > 0)
    heard = await until(
        lambda: hears(customer, TONES["agent"], above_wideband, ms=2000),
        lambda h: h[TONES["agent"]] >= HEARD_DB,
    )
    after = await agent.outbound()
    assert after is not None

    kbps = (
        8 * (after["bytesSent"] - before["bytesSent"]) / (after["timestamp"] - before["timestamp"])
    )
    assert after["mimeType"] == "audio/opus"
    assert "maxplaybackrate=16000" in after["remoteFmtp"]
    assert "maxplaybackrate=16000" in after["sdpFmtpLine"]  # what the sender uses
    assert "maxaveragebitrate=32000" in after["remoteFmtp"]
    assert "stereo=0" in after["remoteFmtp"]
    assert 12 <= kbps <= 36, f"{kbps:.1f} kbps of Opus payload; {after}"
    assert heard[TONES["agent"]] >= HEARD_DB, heard
    assert heard[above_wideband] < SILENT_DB, heard


async def test_the_cue_panel_pops_out_into_document_picture_in_picture_and_back(
    call: Call,
) -> None:
    _, agent = await start_call(call)
    sam = await monitor(call, "sup-1", "Open mic")
    async with agent.page.context.expect_page() as opened:
        await agent.page.get_by_role("button", name="Pop out").click()
    pip = await opened.value

    await sam.page.get_by_label("Cue text").fill("Ask for the order number.")
    await sam.page.get_by_role("button", name="Send cue").click()
    await (
        pip.locator(".cue", has_text="Ask for the order number.")
        .get_by_role("button", name="Acknowledge")
        .click()
    )
    await expect(sam.page.locator(".cue.done")).to_contain_text("Acknowledged by the agent")
    await expect(agent.page.locator("#cue-panel")).to_have_count(0)  # it lives in the window
    await pip.get_by_role("button", name="Back to page").click()
    await expect(agent.page.locator("#cue-panel .cue.done")).to_contain_text("Ask for the order")


async def test_a_supervisor_opens_a_room_of_their_queue_from_the_lobby_and_whispers_in_it(
    call: Call,
) -> None:
    call.queue, call.lobby_queues = "sales", ["sales"]
    _, agent = await start_call(call)
    other_queue = token(Role.CUSTOMER, room="room-2", sub="cust-2", name="Pat", queue="support")
    await call.command("room-2", other_queue, "join")
    support_lead = token(Role.SUPERVISOR, room="*", sub="sup-9", queues=["support"])
    listed = await until(
        lambda: call.http.get("/lobby", headers={"Authorization": f"Bearer {support_lead}"}),
        lambda response: [room["room_id"] for room in response.json()["rooms"]] == ["room-2"],
    )
    assert [room["room_id"] for room in listed.json()["rooms"]] == ["room-2"], listed.text

    console = await call.open("sup-1")
    sales = console.page.locator('#rooms tr[data-room="room-1"]')
    await expect(sales).to_contain_text("sales")
    await expect(sales).to_contain_text("Casey Customer")
    await expect(sales).to_contain_text("Alex Agent")
    await expect(sales.locator('[data-field="coaches"]')).to_have_text("nobody")
    await expect(sales.locator('[data-field="open-for"]')).to_have_text(re.compile(r"^\d\d:\d\d$"))
    await expect(console.page.locator('#rooms tr[data-room="room-2"]')).to_have_count(0)
    await expect(console.page.get_by_role("columnheader", name="Open for")).to_be_visible()

    await sales.get_by_role("button", name="Open room room-1").press("Enter")  # by keyboard
    await expect(console.page.get_by_role("heading", name="Room room-1")).to_be_visible()
    await console.page.get_by_role("button", name="Join and monitor").click()
    await expect(console.page.get_by_text("Monitoring: you hear the call.")).to_be_visible()
    await console.page.get_by_label("Open mic").check()
    await console.page.get_by_role("button", name="Whisper", exact=True).click()
    await expect(badge(agent, "sup-1")).to_be_visible()

    # A second tab on the same link: the lobby now shows who is coaching.
    lobby = PageUnderTest(await console.page.context.new_page())
    link = call.link("sup-1")
    lobby.secret = link.partition("token=")[2]
    call.pages["sup-1-lobby"] = lobby
    await lobby.page.goto(link)
    coaches = lobby.page.locator('#rooms tr[data-room="room-1"] [data-field="coaches"]')
    await expect(coaches).to_have_text("Sam Super (whispering)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await lobby.page.screenshot(
        path=SCREENSHOTS / "lobby.png", clip={"x": 0, "y": 0, "width": 1180, "height": 320}
    )
    # A new call in the queue is pushed to the open lobby, well before its 15 s re-read.
    new_call = token(Role.CUSTOMER, room="room-3", sub="cust-3", name="Lee", queue="sales")
    await call.command("room-3", new_call, "join")
    await expect(lobby.page.locator('#rooms tr[data-room="room-3"]')).to_contain_text(
        "Lee", timeout=5_000
    )
    await call.command("room-3", new_call, "leave")  # and it leaves when it empties
    await expect(lobby.page.locator('#rooms tr[data-room="room-3"]')).to_have_count(
        0, timeout=5_000
    )

    await console.page.get_by_role("link", name="Back to rooms").click()
    await expect(console.page.locator('#rooms tr[data-room="room-1"]')).to_be_visible()
    # Only the console has a lobby: the desk still needs a room in its link.
    await lobby.page.goto(f"{call.http.base_url}/desk#token={lobby.secret}")
    await expect(lobby.page.get_by_role("status")).to_contain_text("Open this page with the link")
    assert_no_token_in_a_url(call)


async def test_pages_reconnect_on_their_own_after_losing_redis_and_catch_up(
    call: Call, redis_client: redis.Redis
) -> None:
    customer, agent = await start_call(call)
    killed = 0
    async with asyncio.timeout(10):
        while not killed:  # the pages' follower of room-1 and the room actor's
            killed = await redis_client.client_kill_filter(_type="normal", skipme=True)
    coach = token(Role.SUPERVISOR, sub="sup-1", name="Sam Super", whisper=True)
    await call.command("room-1", coach, "join")
    await call.command("room-1", coach, "set_coach_mode", mode="open_mic")
    await call.command("room-1", coach, "start_whisper")

    # The desk catches up on the coach who started whispering meanwhile (over HTTP alone, with
    # no media: shown whispering, never as heard).
    await expect(agent.page.locator('.badge[data-coach="sup-1"]')).to_be_visible()
    await expect(badge(agent, "sup-1")).to_be_hidden()
    await expect(agent.page.get_by_role("status")).to_have_text("On the call.")
    await expect(customer.page.get_by_text("You are speaking with Alex Agent")).to_be_visible()
    for page in (customer, agent):
        assert "Connection lost: reconnecting…" in await page.dom_history()
    still = await until(lambda: hears(agent, TONES["cust"]), lambda h: h[500.0] >= HEARD_DB)
    assert still[TONES["cust"]] >= HEARD_DB  # the call's audio goes on: it never needed Redis
    assert_nothing_of_supervisors(customer, await customer.dom_history())


WRONG_ROLE = [
    ("desk", Role.CUSTOMER, "This link is for a customer, not an agent: open it on the call page."),
    ("call", Role.AGENT, "This link is for an agent, not a customer: open it on the agent desk."),
    (
        "call",
        Role.SUPERVISOR,
        "This link is for a supervisor, not a customer: open it on the supervisor console.",
    ),
    (
        "desk",
        Role.SUPERVISOR,
        "This link is for a supervisor, not an agent: open it on the supervisor console.",
    ),
    (
        "console",
        Role.CUSTOMER,
        "This link is for a customer, not a supervisor: open it on the call page.",
    ),
    (
        "console",
        Role.AGENT,
        "This link is for an agent, not a supervisor: open it on the agent desk.",
    ),
]


async def test_a_link_for_another_role_is_refused_in_a_sentence_and_the_page_stops(
    call: Call,
) -> None:
    browser = await launch_speaker(call.playwright, write_tone(call.tmp / "any.wav", 440.0))
    call.browsers.append(browser)

    async def opened(path: str, role: Role, *, unreadable_token: bool = False) -> PageUnderTest:
        context = await browser.new_context()
        await context.add_init_script(PROBE)
        if unreadable_token:  # the page cannot read the token's payload: the hello must do
            await context.add_init_script("window.atob = () => { throw new Error('no'); };")
        page = PageUnderTest(await context.new_page())
        bearer = token(role, sub=f"{role}-x", whisper=role is Role.SUPERVISOR)
        await page.page.goto(f"{call.http.base_url}/{path}#room=room-1&token={bearer}")
        return page

    for path, role, sentence in WRONG_ROLE:
        page = await opened(path, role)
        await expect(page.page.locator("#status")).to_have_text(sentence)
        assert page.errors == [], (path, role, page.errors)
        assert not [url for url in page.urls if url.startswith("ws") or "/wh" in url]
        if path != "console":
            await expect(page.page.get_by_role("button", name="Join the call")).to_be_disabled()

    for path, role, sentence in WRONG_ROLE[:2] + WRONG_ROLE[4:5]:
        page = await opened(path, role, unreadable_token=True)
        await expect(page.page.locator("#status")).to_have_text(sentence)
        assert await page.page.evaluate("window.__probe.connections.length") == 0
        assert page.errors == [], (path, role, page.errors)
        assert [url for url in page.urls if url.startswith("ws")]  # it asked; the hello said
        if path == "console":
            await expect(page.page.locator("#room-console")).to_be_hidden()
        else:
            await expect(page.page.get_by_role("button", name="Join the call")).to_be_disabled()
    customer_page = await opened("call", Role.CUSTOMER)  # and its own role is let in
    await expect(customer_page.page.locator("#status")).to_have_text("Ready. Join when you are.")


async def focused(page: PageUnderTest) -> str:
    """What has the keyboard focus: the element's id, or its data-cue, or its tag."""
    described: str = await page.page.evaluate(
        "(() => { const e = document.activeElement;"
        " return e.id || (e.dataset.cue ? `cue ${e.dataset.cue}` : e.tagName); })()"
    )
    return described


async def test_pages_say_only_what_is_true_after_a_hang_up_a_coach_leaving_and_the_end(
    call: Call,
) -> None:
    customer, agent = await start_call(call)
    for page in (customer, agent):  # Join is gone: the focus is on the next control
        await expect(page.page.locator("#mute")).to_be_focused()
    console = await call.open("sup-1")
    await console.page.get_by_role("button", name="Join and monitor").click()
    await expect(console.page.get_by_text("Monitoring: you hear the call.")).to_be_visible()
    await expect(console.page.locator("#whisper")).to_be_focused()

    # Two cues; each Acknowledge, by keyboard, moves the focus on, never to the page's body.
    for text in ("Ask for the order number.", "Offer the loyalty discount."):
        await console.page.get_by_label("Cue text").fill(text)
        await console.page.get_by_role("button", name="Send cue").click()
        await expect(agent.page.locator(".cue", has_text=text)).to_contain_text("from Sam Super")
    ask, offer = (agent.page.locator(".cue", has_text=text) for text in ("Ask for", "Offer"))
    first_id, second_id = await ask.get_attribute("data-cue"), await offer.get_attribute("data-cue")
    await agent.page.get_by_role("button", name="Acknowledge cue: Offer the loyalty").press("Enter")
    await expect(agent.page.locator(f'.cue.done[data-cue="{second_id}"]')).to_be_visible()
    await expect(agent.page.get_by_role("button", name="Acknowledge cue: Ask for")).to_be_focused()
    await agent.page.keyboard.press("Enter")
    await expect(agent.page.locator(f'.cue.done[data-cue="{first_id}"]')).to_be_visible()
    assert await focused(agent) == f"cue {first_id}"

    # The coach leaves: their cues still say who sent them.
    await console.page.get_by_role("button", name="Leave").click()
    await expect(agent.page.locator("#no-coaches")).to_be_visible()
    await expect(agent.page.locator(".cue-from")).to_have_text(["from Sam Super"] * 2)
    await expect(agent.page.locator(".cue-from", has_text="sup-1")).to_have_count(0)
    await expect(console.page.locator("#monitor")).to_be_focused()

    # The customer hangs up: the page no longer says who they are speaking with.
    await customer.page.get_by_role("button", name="Hang up").click()
    await expect(customer.page.locator("#status")).to_have_text(
        "You left the call. Join again if you need to."
    )
    await expect(customer.page.locator("#agent")).to_be_hidden()
    await expect(customer.page.get_by_role("button", name="Join the call")).to_be_focused()

    # The room closes with a coach in it: no page lists anybody as in the call any more.
    await console.page.get_by_role("button", name="Join and monitor").click()
    await expect(agent.page.locator('.badge[data-coach="sup-1"]')).to_contain_text(
        "in the call, not whispering"
    )
    agent_token = token(Role.AGENT, sub="agent", name=NAMES["agent"])
    await call.command("room-1", agent_token, "close_room", reason="call ended")
    await expect(agent.page.locator("#status")).to_have_text("The call has ended.")
    await expect(agent.page.locator(".badge")).to_have_count(0)
    await expect(agent.page.locator("#no-coaches")).to_be_visible()
    await expect(console.page.locator("#status")).to_have_text("This call has ended.")
    await expect(console.page.locator("#coaches tr")).to_have_count(0)
    await expect(customer.page.locator("#status")).to_have_text("The call has ended. Thank you.")
    await expect(customer.page.locator("#agent")).to_be_hidden()

    # Every page links its icon, which is served; and no page reported an error.
    for page in (customer, agent, console):
        icon = await page.page.evaluate(
            "fetch(document.querySelector('link[rel=icon]').href)"
            ".then((r) => [r.status, r.headers.get('content-type')])"
        )
        assert icon == [200, "image/svg+xml"]
        assert page.errors == [], page.errors
    assert_nothing_of_supervisors(customer, await customer.dom_history())
