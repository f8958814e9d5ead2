"""The pages in a real Firefox: Debian's firefox-esr, headless, driven over WebDriver BiDi.

Playwright cannot drive Debian's Firefox, and no geckodriver to trust is to be had from the
registries CI reaches (the one wheel said to ship it offline holds a Windows build). Firefox
needs none: its remote agent speaks WebDriver BiDi itself (``--remote-debugging-port``), so
this module talks to it over a WebSocket with the ``websockets`` the service already uses.
One Firefox, on a profile of its own with a fake microphone and loopback ICE, opens the
customer's call and the agent's desk, joins both and checks that each page's live view arrived
and that each page's WebRTC receive path gets audio packets; then a supervisor's console with
a ``*`` token draws the lobby, opens the room, monitors, whispers open-mic and with the
spacebar held, and sends a cue the agent acknowledges. The agent's desk shows the coach while
audible and gets their audio as a second stream; the customer's page never names the coach.
Every page records its JavaScript errors and console errors, and none may have any.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from events.room import Role
from tests.support import RunningService, token

pytestmark = pytest.mark.newest_redis

FIREFOX = os.environ.get("EARPIECE_FIREFOX", "/usr/bin/firefox-esr")

PREFS: dict[str, object] = {
    # A fake microphone, granted without a prompt; audio plays without a gesture, silently.
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.volume_scale": "0.0",
    # ICE on loopback, with plain host addresses.
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    # Firefox reaches nowhere but loopback: anything else goes to a proxy on the discard port
    # (loopback itself is never proxied), and its background services are off.
    "network.proxy.type": 1,
    "network.proxy.http": "127.0.0.1",
    "network.proxy.http_port": 9,
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.ssl_port": 9,
    "network.proxy.no_proxies_on": "127.0.0.1,localhost",
    "network.proxy.allow_hijacking_localhost": False,
    "network.dns.disablePrefetch": True,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "app.normandy.enabled": False,
    "app.update.disabledForTesting": True,
    "messaging-system.rsexperimentloader.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.server": "",
    "browser.safebrowsing.update.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "extensions.update.enabled": False,
}

# Before any page script: keep every peer connection, and every error the page reports.
PROBE = """() => {
  const Native = window.RTCPeerConnection;
  const connections = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); connections.push(this); }
  };
  const errors = [];
  const consoleError = console.error.bind(console);
  console.error = (...args) => { errors.push(args.map(String).join(" ")); consoleError(...args); };
  window.addEventListener("error", (e) => errors.push(`${e.message} ${e.filename}:${e.lineno}`));
  window.addEventListener("unhandledrejection", (e) => errors.push(`rejection: ${e.reason}`));
  const candidates = (sdp) => (sdp ?? "").split("\\r\\n").filter((l) => l.startsWith("a=cand"));
  window.__probe = {
    errors,
    // Per receiving peer connection: its state, the audio packets its inbound RTP got, and
    // the candidates of both sides (to tell why, should it get none).
    async received() {
      const out = [];
      for (const pc of connections) {
        if (!pc.getTransceivers().some((t) => t.direction === "recvonly")) continue;
        let packets = 0;
        let streams = 0;  // inbound audio streams that got packets: one per routed speaker
        for (const report of (await pc.getStats()).values()) {
          if (report.type === "inbound-rtp" && report.kind === "audio") {
            packets += report.packetsReceived;
            streams += report.packetsReceived > 0 ? 1 : 0;
          }
        }
        out.push({
          state: pc.connectionState, packets, streams,
          local: candidates(pc.localDescription?.sdp),
          remote: candidates(pc.remoteDescription?.sdp),
        });
      }
      return JSON.stringify(out);
    },
  };
}"""

JOIN_READY = "location.hash === '' && !document.querySelector('#join').disabled"
"""The token left the address, and the page is ready to join."""

SHOWN = (
    "document.visibilityState === 'visible' && new Promise((shown) =>"
    " requestAnimationFrame(() => requestAnimationFrame(() => shown(true))))"
)
"""The page is visible and has been painted."""

PAGE_STATE = (
    "JSON.stringify([document.querySelector('#status')?.textContent,"
    " document.querySelector('#alert')?.textContent, window.__probe.errors])"
)


def firefox_or_skip() -> str:
    """Debian's firefox-esr; CI installs it (``.ci/run``), so there its absence is a failure."""
    found = shutil.which(FIREFOX)
    if found:
        return found
    reason = f"no Firefox at {FIREFOX}: apt-get install firefox-esr"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


class BiDiError(Exception):
    pass


class Firefox:
    """A WebDriver BiDi session with one Firefox."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.log: list[dict[str, Any]] = []
        """Every ``log.entryAdded`` event: console messages and uncaught errors."""
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.socket:
            message = json.loads(raw)
            if message.get("id") in self.replies:
                self.replies.pop(message["id"]).set_result(message)
            elif message.get("method") == "log.entryAdded":
                self.log.append(message["params"])

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        command = next(self.ids)
        reply = self.replies[command] = asyncio.get_running_loop().create_future()
        await self.socket.send(json.dumps({"id": command, "method": method, "params": params}))
        message = await asyncio.wait_for(reply, 15)
        if message.get("type") == "error":
            raise BiDiError(f"{method}: {message['error']}: {message.get('message')}")
        result: dict[str, Any] = message["result"]
        return result

    async def open(self, url: str) -> str:
        """A new window on ``url``, loaded; its context id."""
        tab = (await self.send("browsingContext.create", type="window"))["context"]
        await self.send("browsingContext.navigate", context=tab, url=url, wait="complete")
        return str(tab)

    async def evaluate(self, context: str, expression: str) -> Any:
        result = await self.send(
            "script.evaluate",
            expression=expression,
            target={"context": context},
            awaitPromise=True,
        )
        if result["type"] == "exception":
            raise BiDiError(result["exceptionDetails"]["text"])
        return result["result"].get("value")

    async def wait_for(self, context: str, expression: str, within: float = 15.0) -> Any:
        """The value of ``expression`` once it is truthy.

        An expression that throws counts as not yet true: while a page navigates, its next
        document may not have the elements yet.
        """
        deadline = time.monotonic() + within
        while True:
            try:
                value = await self.evaluate(context, expression)
            except BiDiError as exc:
                value, thrown = None, exc
            else:
                thrown = None
            if value:
                return value
            if time.monotonic() > deadline:
                state = await self.evaluate(context, PAGE_STATE)
                raise AssertionError(
                    f"not within {within} s: {expression} ({thrown or value!r}); page: {state}"
                )
            await asyncio.sleep(0.1)

    async def click(self, context: str, css: str) -> None:
        """A pointer click on the element, as a person's, not a script's ``click()``."""
        await self.send("browsingContext.activate", context=context)
        await self.wait_for(context, SHOWN)
        locator = {"type": "css", "value": css}
        nodes = (await self.send("browsingContext.locateNodes", context=context, locator=locator))[
            "nodes"
        ]
        assert nodes, f"no {css}"
        origin = {"type": "element", "element": {"sharedId": nodes[0]["sharedId"]}}
        clicks = [
            {"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0},
        ]
        await self.send(
            "input.performActions",
            context=context,
            actions=[{"type": "pointer", "id": "mouse", "actions": clicks}],
        )

    async def keys(self, context: str, *actions: tuple[str, str]) -> None:
        """Key actions, e.g. ``("keyDown", " ")``, into the focused element of ``context``."""
        await self.send(
            "input.performActions",
            context=context,
            actions=[
                {
                    "type": "key",
                    "id": "keyboard",
                    "actions": [{"type": kind, "value": key} for kind, key in actions],
                }
            ],
        )

    async def type(self, context: str, css: str, text: str) -> None:
        """Click into the field, then type ``text`` key by key."""
        await self.click(context, css)
        await self.keys(context, *((kind, c) for c in text for kind in ("keyDown", "keyUp")))

    def page_errors(self) -> list[str]:
        """The errors that pages logged, as Firefox reports them."""
        return [
            f"{entry.get('type')}: {entry.get('text')}"
            for entry in self.log
            if entry.get("level") == "error" and entry.get("source", {}).get("context")
        ]


def start_firefox(tmp: Path, microphone_for: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Headless Firefox on a new profile whose origin ``microphone_for`` may use the microphone.

    The permission matters: a page with neither a granted microphone nor one capturing right
    then gathers ICE candidates on the default route's interface only, never on loopback.
    Firefox's output goes to the log file returned with it.
    """
    profile = tmp / "firefox-profile"
    profile.mkdir()
    permissions = tmp / "firefox-permissions"
    permissions.write_text(f"origin\tmicrophone\t1\t{microphone_for}\n")
    prefs = PREFS | {"permissions.manager.defaultsUrl": permissions.as_uri()}
    (profile / "user.js").write_text(
        "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())
    )
    log = tmp / "firefox.log"
    command = [firefox_or_skip(), "-headless", "-no-remote", "-profile", str(profile)]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--remote-debugging-port", "0", "about:blank"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1"},
        )
    return process, log


def bidi_url(process: subprocess.Popen[bytes], log: Path, within: float = 20) -> str:
    """The WebSocket that Firefox says it listens on."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"WebDriver BiDi listening on (ws://\S+)", log.read_text())
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"Firefox gave no WebDriver BiDi endpoint: {log.read_text()[-2000:]}")


def descendants(pid: int) -> list[int]:
    """The PIDs of a process's children, theirs, and so on (Firefox's content processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in map(int, (task / "children").read_text().split()):
                found += [child, *descendants(child)]
    return found


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop Firefox by its PID, then each of its processes that outlives it, by theirs."""
    children = descendants(process.pid)
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 5
    while (alive := [pid for pid in children if Path(f"/proc/{pid}").exists()]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def launch_firefox(tmp: Path, microphone_for: str) -> AsyncIterator[Firefox]:
    """A BiDi session with a Firefox of its own (``start_firefox``), stopped by its PID."""
    process, log = start_firefox(tmp, microphone_for)
    try:
        url = await asyncio.to_thread(bidi_url, process, log)
        async with websockets.connect(f"{url}/session", max_size=None) as socket:
            firefox = Firefox(socket)
            try:
                await firefox.send("session.new", capabilities={})
                await firefox.send("session.subscribe", events=["log.entryAdded"])
                await firefox.send("script.addPreloadScript", functionDeclaration=PROBE)
                yield firefox
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(firefox.send("session.end"), 2)
                firefox.reader.cancel()
    finally:
        await asyncio.to_thread(stop, process)


COACH_STATE_IS = "document.querySelector('#me')?.textContent === {!r}"
BADGE_ACTIVE = "document.querySelector('.badge[data-coach=\"sup-1\"] .whisper-active') !== null"


async def streams_with_audio(firefox: Firefox, page: str) -> int:
    """How many of the page's inbound audio streams have got packets: one per routed speaker."""
    received: list[Any] = json.loads(await firefox.evaluate(page, "__probe.received()"))
    return max((int(r["streams"]) for r in received), default=0)


async def streams_reach(firefox: Firefox, page: str, count: int, within: float = 10.0) -> int:
    """The page's streams with audio, once there are ``count`` (or however many after 10 s)."""
    deadline = time.monotonic() + within
    while (streams := await streams_with_audio(firefox, page)) < count:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    return streams


async def most_streams_over(firefox: Firefox, page: str, seconds: float) -> int:
    """The most streams with audio the page had, looking every 0.2 s for ``seconds``."""
    seen = 0
    for _ in range(int(seconds / 0.2)):
        seen = max(seen, await streams_with_audio(firefox, page))
        await asyncio.sleep(0.2)
    return seen


async def receives_audio(firefox: Firefox, page: str, within: float = 10.0) -> list[Any]:
    """The page's receiving peer connections, once one of them got audio packets."""
    deadline = time.monotonic() + within
    while True:
        received: list[Any] = json.loads(await firefox.evaluate(page, "__probe.received()"))
        if any(r["packets"] > 0 for r in received) or time.monotonic() > deadline:
            return received
        await asyncio.sleep(0.2)


async def test_firefox_joins_a_call_and_a_supervisor_coaches_in_it_from_the_lobby(
    service: RunningService, tmp_path: Path
) -> None:
    base = str(service.http.base_url).rstrip("/")
    customer_token = token(Role.CUSTOMER, sub="cust", name="Casey Customer", queue="sales")
    agent_token = token(Role.AGENT, sub="agent", name="Alex Agent", queue="sales")
    lobby_token = token(
        Role.SUPERVISOR, room="*", sub="sup-1", name="Sam Super", whisper=True, queues=["sales"]
    )
    async with launch_firefox(tmp_path, microphone_for=base) as firefox:
        customer = await firefox.open(f"{base}/call#room=room-1&token={customer_token}")
        agent = await firefox.open(f"{base}/desk#room=room-1&token={agent_token}")
        await firefox.wait_for(customer, JOIN_READY)
        await firefox.click(customer, "#join")
        # The live channel draws each page's view of the other. The desk names the customer
        # above its Join button, which moves it down: the agent clicks once it has moved.
        named = await firefox.wait_for(agent, "document.querySelector('#customer').textContent")
        assert named == "Customer: Casey Customer"
        await firefox.wait_for(agent, JOIN_READY)
        await firefox.click(agent, "#join")
        named = await firefox.wait_for(customer, "document.querySelector('#agent').textContent")
        assert named == "You are speaking with Alex Agent."
        await firefox.wait_for(agent, "document.querySelector('#hangup').hidden === false")

        # Each page gets the other's audio over WebRTC, on loopback.
        for page in (customer, agent):
            received = await receives_audio(firefox, page)
            assert any(r["state"] == "connected" and r["packets"] > 0 for r in received), received
            assert all(" 127.0.0.1 " in line for r in received for line in r["remote"]), received

        console = await firefox.open(f"{base}/console#token={lobby_token}")
        row = "document.querySelector('#rooms tr[data-room=\"room-1\"]')?.textContent"
        # The lobby follows the feed on its own: wait until it has drawn the agent's join too.
        drawn = await firefox.wait_for(console, f"({row})?.includes('Alex Agent') && {row}")
        assert "Casey Customer" in drawn
        assert "Alex Agent" in drawn

        # The supervisor opens the room, monitors, and whispers in one click, open-mic.
        await firefox.click(console, '#rooms tr[data-room="room-1"] button')
        await firefox.wait_for(console, "document.querySelector('#monitor')?.disabled === false")
        await firefox.click(console, "#monitor")
        await firefox.wait_for(console, COACH_STATE_IS.format("Monitoring: you hear the call."))
        assert await streams_reach(firefox, console, 2) == 2  # the customer and the agent
        assert await most_streams_over(firefox, agent, 1.0) == 1  # the customer only
        await firefox.click(console, 'input[value="open_mic"]')
        await firefox.click(console, "#whisper")
        await firefox.wait_for(agent, BADGE_ACTIVE)
        assert await streams_reach(firefox, agent, 2) == 2  # the customer and the coach

        # Push-to-talk with the spacebar: the coach is audible only while it is held.
        await firefox.click(console, 'input[value="push_to_talk"]')
        await firefox.wait_for(agent, f"!({BADGE_ACTIVE})")
        await firefox.click(console, "#whisper-title")  # focus off the radio, out of any field
        await firefox.keys(console, ("keyDown", " "))
        await firefox.wait_for(agent, BADGE_ACTIVE)
        await firefox.keys(console, ("keyUp", " "))
        await firefox.wait_for(agent, f"!({BADGE_ACTIVE})")

        # A cue typed on the console reaches the agent's panel; the acknowledgment returns.
        await firefox.type(console, "#cue-text", "Offer the loyalty discount.")
        await firefox.click(console, '#cue-form button[type="submit"]')
        cue = "document.querySelector('.cue:not(.done) .cue-text')?.textContent"
        assert await firefox.wait_for(agent, cue) == "Offer the loyalty discount."
        await firefox.click(agent, ".cue:not(.done) button")
        acknowledged = "document.querySelector('.cue.done')?.textContent"
        assert "Acknowledged by the agent" in await firefox.wait_for(console, acknowledged)

        # The customer's page heard from the server and never named a supervisor.
        text = await firefox.evaluate(customer, "document.documentElement.outerHTML")
        assert "Alex Agent" in text
        assert "Sam Super" not in text
        assert "sup-1" not in text

        for page in (customer, agent, console):
            errors = await firefox.evaluate(page, "JSON.stringify(__probe.errors)")
            assert json.loads(errors) == [], errors
        assert firefox.page_errors() == []
