"""Property-based fuzzing of what a client sends, against ``earpiece serve`` as a child process:
command bodies, WHIP/WHEP offers, JWT headers and live-channel messages. No answer is a 500,
no socket is dropped without a close code, and the service logs no traceback.

Every example speaks as a participant of a room of its own, so that the rate limits (which
are per participant and per room) let it reach the parsers rather than answer 429.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from events.room import Role
from projections.commands import RoomCommand
from services.redis_server import RedisServer
from tests.services.media.test_sdp import chromium_offer
from tests.support import SECRET, token
from tests.system.processes import ServiceProcess

pytestmark = pytest.mark.newest_redis

EXAMPLES = settings(max_examples=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
ALLOWED = {200, 201, 400, 401, 403, 404, 408, 409, 413, 415, 422}
"""Every answer a bad request may get; never 500 (nor 429: each example is a room's first)."""

_rooms = itertools.count()


def fresh_room() -> str:
    return f"fuzz-{next(_rooms)}"


class Fuzzed:
    """The service under fuzzing, and where its log has been read up to."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.http = httpx.Client(base_url=service.url, timeout=30)
        self._read = 0

    def new_log(self) -> str:
        log = self.service.log_path.read_text()
        new, self._read = log[self._read :], len(log)
        return new

    def assert_no_traceback(self) -> None:
        log = self.new_log()
        assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]
        assert '" 500 ' not in log


@pytest.fixture(scope="module")
def fuzzed(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    service = ServiceProcess(redis_server.url, tmp_path_factory.mktemp("fuzzed"))
    service.start()
    fuzzed = Fuzzed(service)
    yield fuzzed
    fuzzed.http.close()
    service.stop()


def bearer(role: Role, room: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token(role, room=room, whisper=role is Role.SUPERVISOR)}"}


# --- command bodies ----------------------------------------------------------------------------

COMMAND_NAMES = sorted(
    tag for cls in RoomCommand.__args__ if isinstance(tag := cls.__struct_config__.tag, str)
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
COMMAND_FIELDS = st.sampled_from(["coach", "mode", "cue_id", "text", "reason", "command", "x"])
COMMAND_BODIES = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {"command": st.sampled_from(COMMAND_NAMES) | st.text(max_size=12)},
        optional={field: JSON for field in ("coach", "mode", "cue_id", "text", "reason")},
    ).map(lambda body: json.dumps(body).encode()),
    st.dictionaries(COMMAND_FIELDS, JSON, max_size=4).map(lambda body: json.dumps(body).encode()),
)


@EXAMPLES
@given(body=COMMAND_BODIES, role=st.sampled_from(list(Role)))
def test_no_command_body_gets_a_500(fuzzed: Fuzzed, body: bytes, role: Role) -> None:
    room = fresh_room()
    answer = fuzzed.http.post(f"/rooms/{room}/commands", content=body, headers=bearer(role, room))
    assert answer.status_code in ALLOWED, answer.text
    assert answer.headers["content-type"] == "application/json"


def test_command_fuzzing_logged_no_traceback(fuzzed: Fuzzed) -> None:
    fuzzed.assert_no_traceback()


# --- WHIP/WHEP offers ------------------------------------------------------------------------

CHROMIUM = chromium_offer("sendrecv").splitlines()
"""Good for both: a publish offer may also receive, a receive offer may also send."""
LINES = st.sampled_from(CHROMIUM) | st.text(max_size=40).map(lambda text: f"a={text}")


@st.composite
def offers(draw: st.DrawFn) -> str:
    """A Chromium offer with some of its lines dropped, repeated, swapped, moved (a section's
    direction or transport to session level, say) or made up."""
    lines = list(CHROMIUM)
    for _ in range(draw(st.integers(0, 6))):
        where = draw(st.integers(0, len(lines)))
        match draw(st.sampled_from(["drop", "insert", "replace", "move"])):
            case "drop" if lines:
                del lines[min(where, len(lines) - 1)]
            case "move" if lines:
                moved = lines.pop(min(where, len(lines) - 1))
                lines.insert(draw(st.integers(0, len(lines))), moved)
            case "insert":
                lines.insert(where, draw(LINES))
            case _ if lines:
                lines[min(where, len(lines) - 1)] = draw(LINES)
    return "\r\n".join(lines) + "\r\n"


@EXAMPLES
@given(offer=offers(), path=st.sampled_from(["whip", "whep"]), role=st.sampled_from(list(Role)))
def test_no_offer_gets_a_500(fuzzed: Fuzzed, offer: str, path: str, role: Role) -> None:
    room = fresh_room()
    headers = bearer(role, room) | {"content-type": "application/sdp"}
    answer = fuzzed.http.post(f"/rooms/{room}/{path}", content=offer, headers=headers)
    assert answer.status_code in ALLOWED, answer.text
    if answer.status_code == 201:  # a session was made: end it, so that they do not pile up
        assert fuzzed.http.delete(answer.headers["location"], headers=headers).status_code == 200


def test_offer_fuzzing_logged_no_traceback(fuzzed: Fuzzed) -> None:
    fuzzed.assert_no_traceback()


# --- JWT headers -----------------------------------------------------------------------------


def segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HEADERS = st.one_of(
    st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "crit", "jku", "x5u", "jwk", "cty", "b64", "zip"]),
        JSON | st.sampled_from(["HS256", "none", "RS256", "ES256", "EdDSA", "HS512", ""]),
        max_size=5,
    ).map(lambda header: segment(json.dumps(header).encode())),
    st.binary(max_size=40).map(segment),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40),  # a header's
)


@EXAMPLES
@given(header=HEADERS, signature=st.binary(max_size=40).map(segment), keep_payload=st.booleans())
def test_no_jwt_header_gets_a_500(
    fuzzed: Fuzzed, header: str, signature: str, keep_payload: bool
) -> None:
    room = fresh_room()
    payload = token(Role.AGENT, room=room).split(".")[1] if keep_payload else segment(b"{}")
    forged = f"{header}.{payload}.{signature}"
    answer = fuzzed.http.post(
        f"/rooms/{room}/commands",
        json={"command": "join"},
        headers={"authorization": f"Bearer {forged}"},
    )
    assert answer.status_code == 401, answer.text


def test_jwt_fuzzing_logged_no_traceback(fuzzed: Fuzzed) -> None:
    assert SECRET  # the service signs with the tests' secret: only forgeries are refused
    fuzzed.assert_no_traceback()


# --- live channel messages -------------------------------------------------------------------

MESSAGES = st.one_of(
    JSON.map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["command", "auth", "hello", ""]) | st.text(max_size=8)},
        optional={
            "id": JSON,
            "command": JSON | COMMAND_BODIES.map(lambda body: body.decode("utf-8", "replace")),
        },
    ).map(json.dumps),
    st.text(max_size=100),
    st.binary(max_size=100),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(MESSAGES, min_size=1, max_size=8), role=st.sampled_from(list(Role)))
def test_no_live_channel_message_drops_the_socket(
    fuzzed: Fuzzed, messages: list[str | bytes], role: Role
) -> None:
    room = fresh_room()
    url = fuzzed.service.url.replace("http", "ws", 1) + f"/rooms/{room}/live"
    whisper = role is Role.SUPERVISOR
    with connect(url) as socket:
        socket.send(json.dumps({"type": "auth", "token": token(role, room=room, whisper=whisper)}))
        assert json.loads(socket.recv(5))["type"] == "hello"
        for message in messages:
            socket.send(message)
        socket.send(json.dumps({"type": "command", "id": "last", "command": {"command": "leave"}}))
        replies: list[dict[str, Any]] = []
        closed: ConnectionClosed | None = None
        try:
            while not any(reply.get("id") == "last" for reply in replies):
                replies.append(json.loads(socket.recv(5)))
        except ConnectionClosed as exc:
            closed = exc
    if closed is not None:  # closed on purpose, with a code of ours, or dropped: a defect
        assert closed.rcvd is not None
        assert closed.rcvd.code in {1009, 4401, 4403, 4429}, closed
        return
    assert all(reply["type"] in {"view", "ack", "error", "resume"} for reply in replies)


def test_live_channel_fuzzing_logged_no_traceback(fuzzed: Fuzzed) -> None:
    fuzzed.assert_no_traceback()
