"""SDP text in and out of the SFU: pure functions, no I/O, like aiortc's ``sdp.py``.

``check_offer`` decides whether a WHIP offer (the client publishes its microphone) or a WHEP
offer (the client receives) is one the service can answer, and refuses with a ``BadOffer`` whose
``reason`` the HTTP layer sends back with a 400. The rewrites work line by line on text that
has been checked, or on the server's own answer: ``keep_candidates_from`` drops candidates the
server must never send a connectivity check to, ``with_section_directions`` writes the
direction into each section as aiortc expects, ``announce_address`` swaps the listen address
for the one a 1:1 NAT shows to clients, ``with_opus_fmtp`` sets the Opus parameters the
service negotiates. Input may end lines with LF or CRLF; output always uses CRLF.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal

import msgspec
from aiortc.sdp import SessionDescription

from services.errors import BadOffer

MAX_SDP_BYTES = 64 * 1024
MAX_SDP_LINES = 2000
MAX_CANDIDATES = 16
"""Per media section: a browser sends one per address and protocol (8 on a machine with four
addresses), repeated in every section; each one kept costs connectivity checks to it."""

OPUS_FMTP: Mapping[str, str | int] = MappingProxyType(
    {
        "minptime": 10,
        "useinbandfec": 1,
        "stereo": 0,
        "sprop-stereo": 0,
        "maxplaybackrate": 16000,
        "sprop-maxcapturerate": 16000,
        "maxaveragebitrate": 32000,
    }
)
"""Opus 16 kHz mono at 32 kbps: the server forwards and never encodes, so its answer asks the
clients for what the contact centre needs and no more."""

_LINE = re.compile(r"[a-z]=[^\x00-\x1f\x7f\x85\u2028\u2029]*")
_M_LINE = re.compile(r"m=(?P<kind>[a-z]+) [0-9]+(?:/[0-9]+)? \S+ .*")
_MID = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]{1,32}")
_ICE_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")
_ICE_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")
_FINGERPRINT = re.compile(r"[A-Za-z0-9-]+ [0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+")
_SETUP = re.compile(r"\S+")  # its values are aiortc's to refuse ("not SDP the server can read")
_OPUS_RTPMAP = re.compile(r"a=rtpmap:(?P<pt>[0-9]{1,3}) opus/48000/2", re.IGNORECASE)
_NUMBER = re.compile(r"[0-9]{1,10}")
_PAYLOAD_ATTRIBUTE = re.compile(r"a=(?:rtpmap|fmtp|rtcp-fb):(?P<pt>[0-9]{1,3})[ /]")

_MediaDirection = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
_DIRECTIONS: tuple[_MediaDirection, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class OfferSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What an accepted offer asks for, one entry per audio section in m-line order."""

    mids: tuple[str, ...]
    opus_payload_types: tuple[int, ...]

    @property
    def audio_sections(self) -> int:
        return len(self.mids)


def check_offer(
    sdp: str, *, max_audio_sections: int, direction: Literal["publish", "receive"]
) -> OfferSummary:
    """Accept an audio-only offer the service can answer, or raise ``BadOffer`` saying why.

    A ``publish`` offer has exactly one audio section that lets the client send; a ``receive``
    offer has up to ``max_audio_sections``, each recvonly (sendrecv is allowed: the server will
    only send). Every section offers Opus 48000/2 and has its mid, ICE credentials, DTLS
    fingerprint and setup role, here or at session level. Sections are named by their m-line
    index (from 0).
    """
    lines = _offer_lines(sdp)
    session, sections = _split(lines)
    if not sections:
        raise BadOffer("offer has no media section (m= line)")
    _check_audio_only(sections)
    if len(sections) > max_audio_sections:
        raise BadOffer(
            f"offer has {len(sections)} audio sections, at most {max_audio_sections} allowed"
        )
    mids = _mids(sections)
    names = [_name(index, section) for index, section in enumerate(sections)]
    directions = [_direction(session, section) for section in sections]
    if direction == "publish":
        _check_publishes(directions, names)
    else:
        _check_receives(directions, names)
    for section, name in zip(sections, names, strict=True):
        _check_transport(session, section, name)
        candidates = sum(line.startswith("a=candidate:") for line in section)
        if candidates > MAX_CANDIDATES:
            raise BadOffer(f"{name} has {candidates} candidates, at most {MAX_CANDIDATES} allowed")
    payload_types = tuple(
        _opus_payload_type(section, name) for section, name in zip(sections, names, strict=True)
    )
    _parse_with_aiortc(_text(lines))
    return OfferSummary(mids=mids, opus_payload_types=payload_types)


def keep_candidates_from(sdp: str, networks: Sequence[IPNetwork]) -> str:
    """Drop the ``a=candidate`` lines whose address is outside ``networks``, and mDNS ones.

    A ``.local`` name cannot be resolved here, and a line that does not parse cannot be shown
    to be inside, so both go too. In production ``networks`` is ``0.0.0.0/0`` and ``::/0``.
    """

    def allowed(line: str) -> bool:
        address = _candidate_address(line)
        if address is None:
            return not line.startswith("a=candidate:")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    return _text([line for line in _lines(sdp) if allowed(line)])


def with_section_directions(sdp: str) -> str:
    """Give every media section a direction line of its own: the session-level one, or
    ``sendrecv`` when there is none (RFC 8866 §6.7).

    aiortc reads directions only inside sections, and fails deep in ``createAnswer`` on a
    section without one.
    """
    session, sections = _split(_lines(sdp))
    out = list(session)
    for section in sections:
        out.extend(section)
        if not any(line[2:] in _DIRECTIONS for line in section if line.startswith("a=")):
            out.append(f"a={_direction(session, section)}")
    return _text(out)


def announce_address(sdp: str, *, listen: str, announced: str) -> str:
    """Rewrite host candidates and ``c=`` lines on ``listen`` to show ``announced`` instead.

    For a server behind 1:1 NAT, as mediasoup's listen ip and announcedAddress. Both must be
    IP addresses (``ValueError`` otherwise); the text is unchanged when they are equal.
    """
    listen_ip = ipaddress.ip_address(listen)
    announced_ip = ipaddress.ip_address(announced)

    def rewrite(line: str) -> str:
        fields = line.split(" ")
        if line.startswith("c=") and len(fields) == 3 and _same_ip(fields[2], listen_ip):
            return f"c=IN IP{announced_ip.version} {announced_ip}"
        if (
            _candidate_address(line) is not None
            and fields[6:8] == ["typ", "host"]
            and _same_ip(fields[4], listen_ip)
        ):
            fields[4] = str(announced_ip)
            return " ".join(fields)
        return line

    return _text([rewrite(line) for line in _lines(sdp)])


def with_opus_fmtp(sdp: str, params: Mapping[str, str | int]) -> str:
    """Give every audio section's Opus payload type one ``a=fmtp`` line with exactly ``params``.

    An existing fmtp line for it is replaced; a missing one is added after its ``a=rtpmap``.
    """
    fmtp = ";".join(f"{key}={value}" for key, value in params.items())
    session, sections = _split(_lines(sdp))
    out = list(session)
    for section in sections:
        opus = _opus_payload_types(section) if section[0].startswith("m=audio ") else set()
        for line in section:
            if any(line.startswith(f"a=fmtp:{pt} ") for pt in opus):
                continue
            out.append(line)
            match = _OPUS_RTPMAP.fullmatch(line)
            if match and match["pt"] in opus:
                out.append(f"a=fmtp:{match['pt']} {fmtp}")
    return _text(out)


def only_opus(sdp: str) -> str:
    """Leave Opus as the only payload type of every audio section.

    For the server's answer: the media plane forwards Opus and nothing else, so a client must
    not be allowed to pick G.722 or PCMU from the answer and send audio nobody would hear.
    """
    session, sections = _split(_lines(sdp))
    out = list(session)
    for section in sections:
        opus = _opus_payload_types(section) if section[0].startswith("m=audio ") else None
        if not opus:
            out.extend(section)
            continue
        fields = section[0].split(" ")
        out.append(" ".join([*fields[:3], *(pt for pt in fields[3:] if pt in opus)]))
        for line in section[1:]:
            payload_type = _PAYLOAD_ATTRIBUTE.match(line)
            if payload_type is None or payload_type["pt"] in opus:
                out.append(line)
    return _text(out)


def _lines(sdp: str) -> list[str]:
    lines = [line.removesuffix("\r") for line in sdp.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _text(lines: Sequence[str]) -> str:
    return "".join(f"{line}\r\n" for line in lines)


def _split(lines: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Session-level lines, then one list per media section starting with its ``m=`` line."""
    session: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return session, sections


def _offer_lines(sdp: str) -> list[str]:
    if len(sdp) > MAX_SDP_BYTES:
        raise BadOffer(f"offer is larger than {MAX_SDP_BYTES} bytes")
    try:
        size = len(sdp.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise BadOffer("offer is not SDP: it is not UTF-8 text") from exc
    if size > MAX_SDP_BYTES:
        raise BadOffer(f"offer is larger than {MAX_SDP_BYTES} bytes")
    lines = _lines(sdp)
    if len(lines) > MAX_SDP_LINES:
        raise BadOffer(f"offer has more than {MAX_SDP_LINES} lines")
    if not lines:
        raise BadOffer("offer is not SDP: it is empty")
    for number, line in enumerate(lines, start=1):
        if not _LINE.fullmatch(line):
            raise BadOffer(f"offer is not SDP: line {number} is not <type>=<value>")
    if lines[0] != "v=0":
        raise BadOffer("offer is not SDP: its first line must be v=0")
    return lines


def _attribute(lines: Sequence[str], name: str) -> str | None:
    prefix = f"a={name}:"
    return next((line[len(prefix) :] for line in lines if line.startswith(prefix)), None)


def _name(index: int, section: Sequence[str]) -> str:
    """How a reason names a section: its m-line index (from 0), and its mid when it has one."""
    mid = _attribute(section, "mid")
    return f"m-line {index} (mid {mid})" if mid and _MID.fullmatch(mid) else f"m-line {index}"


def _check_audio_only(sections: Sequence[Sequence[str]]) -> None:
    for index, section in enumerate(sections):
        match = _M_LINE.fullmatch(section[0])
        if match is None:
            raise BadOffer(f"{_name(index, section)} has a malformed m= line")
        if match["kind"] != "audio":
            raise BadOffer(
                f"the service is audio only: {_name(index, section)} is m={match['kind']}"
            )


def _mids(sections: Sequence[Sequence[str]]) -> tuple[str, ...]:
    mids: list[str] = []
    for index, section in enumerate(sections):
        mid = _attribute(section, "mid")
        if mid is None:
            raise BadOffer(f"m-line {index} has no a=mid")
        if not _MID.fullmatch(mid):
            raise BadOffer(f"m-line {index} has a malformed a=mid: use 1-32 token characters")
        if mid in mids:
            raise BadOffer(f"m-line {index} repeats mid {mid}: each m-line needs its own")
        mids.append(mid)
    return tuple(mids)


def _direction(session: Sequence[str], section: Sequence[str]) -> _MediaDirection:
    for lines in (section, session):
        for line in lines:
            for direction in _DIRECTIONS:
                if line == f"a={direction}":
                    return direction
    return "sendrecv"


def _check_publishes(directions: Sequence[_MediaDirection], names: Sequence[str]) -> None:
    if len(directions) != 1:
        raise BadOffer(
            f"a publish offer has exactly one audio section, this one has {len(directions)}"
        )
    if directions[0] not in ("sendonly", "sendrecv"):
        raise BadOffer(
            f"a publish offer must let the client send: {names[0]} is "
            f"{directions[0]}, use sendonly or sendrecv"
        )


def _check_receives(directions: Sequence[_MediaDirection], names: Sequence[str]) -> None:
    for index, direction in enumerate(directions):
        if direction not in ("recvonly", "sendrecv"):
            raise BadOffer(
                f"a receive offer only receives: {names[index]} is {direction}, use recvonly"
            )


def _check_transport(session: Sequence[str], section: Sequence[str], name: str) -> None:
    for attribute, pattern in (
        ("ice-ufrag", _ICE_UFRAG),
        ("ice-pwd", _ICE_PWD),
        ("fingerprint", _FINGERPRINT),
        ("setup", _SETUP),  # without it aiortc fails with an AttributeError, a 500
    ):
        value = _attribute(section, attribute) or _attribute(session, attribute)
        if value is None:
            raise BadOffer(f"{name} has no a={attribute}, neither there nor at session level")
        if not pattern.fullmatch(value):
            raise BadOffer(f"{name} has a malformed a={attribute}")


def _opus_payload_types(section: Sequence[str]) -> set[str]:
    """Payload types, as written, that the section's ``m=`` line lists and maps to Opus."""
    listed = section[0].split(" ")[3:]
    mapped = {match["pt"] for line in section if (match := _OPUS_RTPMAP.fullmatch(line))}
    return mapped.intersection(listed)


def _opus_payload_type(section: Sequence[str], name: str) -> int:
    opus = _opus_payload_types(section)
    preferred = [pt for pt in section[0].split(" ")[3:] if pt in opus]
    if not preferred:
        raise BadOffer(f"{name} does not offer Opus (a=rtpmap:<pt> opus/48000/2)")
    return int(preferred[0])


def _candidate_address(line: str) -> str | None:
    """The connection address of an ``a=candidate`` line, or None if it is not one that parses:
    ``a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>``.
    """
    fields = line.split(" ")
    if not line.startswith("a=candidate:") or len(fields) < 8 or fields[6] != "typ":
        return None
    if not all(_NUMBER.fullmatch(fields[i]) for i in (1, 3, 5)):
        return None
    return fields[4]


def _same_ip(address: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(address) == ip
    except ValueError:
        return False


def _parse_with_aiortc(sdp: str) -> None:
    """The last gate: what aiortc cannot parse, setRemoteDescription would fail on later.

    aiortc reports malformed lines with whatever the parsing step raised (AssertionError,
    ValueError, IndexError, KeyError, StopIteration...), so anything is translated here.
    """
    try:
        SessionDescription.parse(sdp)
    except Exception as exc:
        raise BadOffer(f"offer is not SDP the server can read: {type(exc).__name__}") from exc
