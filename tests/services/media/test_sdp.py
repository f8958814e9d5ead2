"""services/media/sdp.py over real offers: one from an aiortc peer connection, one from Chromium.

The peer connections have no ICE servers and gather host candidates on loopback only
(conftest.py), and a remote description only ever reaches them with its candidates kept to
loopback: no connectivity check leaves this machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import AsyncIterator, Callable
from typing import Literal

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription
from hypothesis import given, settings
from hypothesis import strategies as st

from services.media.sdp import (
    MAX_CANDIDATES,
    MAX_SDP_BYTES,
    MAX_SDP_LINES,
    OPUS_FMTP,
    BadOffer,
    IPNetwork,
    OfferSummary,
    announce_address,
    check_offer,
    keep_candidates_from,
    only_opus,
    with_opus_fmtp,
    with_section_directions,
)

Intent = Literal["publish", "receive"]
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
EVERYWHERE = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]

CHROMIUM_SESSION = """\
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE {mids}
a=extmap-allow-mixed
a=msid-semantic: WMS 0c3c0b9e-5d1e-4b43-9d0a-2f1c1e9d8a51
"""

CHROMIUM_AUDIO = """\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1467250027 1 udp 2122260223 127.0.0.1 46243 typ host generation 0 network-id 1
a=candidate:2804325627 1 udp 2122194687 10.20.30.40 51811 typ host generation 0 network-id 2
a=candidate:3180716575 1 udp 2122131711 2001:db8:4:2::1f2e 40405 typ host generation 0 network-id 3
a=candidate:2999745851 1 udp 2122063615 5f1c7a0e-2b7c-4a55-9d3b-6a0c2c7e1f44.local 55012 \
typ host generation 0 network-id 4
a=candidate:1467250027 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0 \
network-id 1
a=ice-ufrag:EsAw
a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y
a=ice-options:trickle
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:\
34:8E:5E:EA:6F:AF:52:CE:E6:0F
a=setup:actpass
a=mid:{mid}
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a={direction}
a=msid:- 3a1f3b5e-6f5d-4f38-9b3e-1d0c2b7a9e11
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:2271345124 cname:Wq3ZcCq1rhmY4dXj
a=ssrc:2271345124 msid:- 3a1f3b5e-6f5d-4f38-9b3e-1d0c2b7a9e11
"""

VIDEO = """\
m=video 9 UDP/TLS/RTP/SAVPF 96
c=IN IP4 0.0.0.0
a=mid:{mid}
a=sendrecv
a=rtpmap:96 VP8/90000
"""

DATA_CHANNEL = """\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=mid:{mid}
a=sctp-port:5000
"""

# A server answer as aiortc writes it, on a listen address of 127.0.0.1.
SERVER_ANSWER = """\
v=0
o=- 3913617284 3913617284 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic:WMS *
m=audio 50304 UDP/TLS/RTP/SAVPF 96
c=IN IP4 127.0.0.1
a=sendonly
a=mid:0
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=rtpmap:96 opus/48000/2
a=candidate:e1a2 1 udp 2130706431 127.0.0.1 50304 typ host
a=candidate:f3b4 1 udp 1694498815 198.51.100.9 50304 typ srflx raddr 127.0.0.1 rport 50304
a=candidate:a5c6 1 udp 2130706431 ::1 41022 typ host
a=end-of-candidates
a=ice-ufrag:gNUs
a=ice-pwd:qXigV0a7ay8u6sonmars6t
a=fingerprint:sha-256 7D:43:6A:5E:85:E9:2E:07:E0:D5:8B:94:59:A8:71:FE:0E:4D:40:89:09:CA:53:\
86:96:66:45:D3:DB:CB:7A:04
a=setup:active
""".replace("\n", "\r\n")


def chromium_offer(*directions: str, extra: str = "") -> str:
    """Chromium's offer with one audio section per direction, then ``extra`` sections."""
    mids = [str(mid) for mid in range(len(directions) + extra.count("{mid}"))]
    audio = [
        CHROMIUM_AUDIO.format(mid=mid, direction=direction)
        for mid, direction in zip(mids, directions, strict=False)
    ]
    offer = CHROMIUM_SESSION.format(mids=" ".join(mids)) + "".join(audio)
    return (offer + extra.format(mid=mids[-1])).replace("\n", "\r\n")


def without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


def candidate_addresses(sdp: str) -> list[str]:
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]


def lines_starting(sdp: str, prefix: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith(prefix)]


PeerConnections = Callable[[], RTCPeerConnection]


@pytest.fixture
async def peer_connection() -> AsyncIterator[PeerConnections]:
    """Makes aiortc peer connections without ICE servers; closes them all after the test."""
    made: list[RTCPeerConnection] = []

    def make() -> RTCPeerConnection:
        made.append(RTCPeerConnection(RTCConfiguration(iceServers=[])))
        return made[-1]

    yield make
    for pc in made:
        await pc.close()


async def aiortc_offer(peer_connection: PeerConnections, *directions: str) -> str:
    pc = peer_connection()
    for direction in directions:
        pc.addTransceiver("audio", direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


# check_offer: accepted offers


async def test_check_offer_accepts_aiortc_publish_offer(peer_connection: PeerConnections) -> None:
    offer = await aiortc_offer(peer_connection, "sendonly")

    summary = check_offer(offer, max_audio_sections=1, direction="publish")

    assert summary == OfferSummary(mids=("0",), opus_payload_types=(96,))


async def test_check_offer_accepts_aiortc_receive_offer_with_its_mids(
    peer_connection: PeerConnections,
) -> None:
    offer = await aiortc_offer(peer_connection, "recvonly", "recvonly")

    summary = check_offer(offer, max_audio_sections=2, direction="receive")

    assert summary == OfferSummary(mids=("0", "1"), opus_payload_types=(96, 96))


@pytest.mark.parametrize("direction", ["sendrecv", "sendonly"])
def test_check_offer_accepts_chromium_publish_offer(direction: str) -> None:
    summary = check_offer(chromium_offer(direction), max_audio_sections=1, direction="publish")

    assert summary == OfferSummary(mids=("0",), opus_payload_types=(111,))


@pytest.mark.parametrize("direction", ["recvonly", "sendrecv"])
def test_check_offer_accepts_chromium_receive_offer_up_to_the_limit(direction: str) -> None:
    offer = chromium_offer(*[direction] * 3)

    summary = check_offer(offer, max_audio_sections=3, direction="receive")

    assert summary.audio_sections == 3


def test_check_offer_accepts_the_most_candidates_in_every_section_of_an_agents_offer() -> None:
    # Chromium repeats its candidates in every section: an agent's 5 sections hold 40 of
    # them on a machine with four addresses: more than one section may hold.
    offer = chromium_offer(*["recvonly"] * 5)
    per_section = candidate_addresses(chromium_offer("recvonly"))
    extra = "".join(
        f"a=candidate:{n} 1 udp 2122260223 127.0.0.1 {30000 + n} typ host\r\n"
        for n in range(MAX_CANDIDATES - len(per_section))
    )
    offer = re.sub(r"(a=mid:\d+\r\n)", lambda m: m.group(1) + extra, offer)

    summary = check_offer(offer, max_audio_sections=5, direction="receive")

    assert summary.audio_sections == 5
    assert len(candidate_addresses(offer)) == 5 * MAX_CANDIDATES


def test_check_offer_accepts_lf_only_line_endings() -> None:
    offer = chromium_offer("sendonly").replace("\r\n", "\n")

    summary = check_offer(offer, max_audio_sections=1, direction="publish")

    assert summary.mids == ("0",)


def test_check_offer_accepts_bundle_less_offer() -> None:
    offer = without(chromium_offer("recvonly", "recvonly"), "a=group:BUNDLE")

    summary = check_offer(offer, max_audio_sections=2, direction="receive")

    assert summary.mids == ("0", "1")


def test_check_offer_accepts_ice_and_fingerprint_at_session_level() -> None:
    offer = chromium_offer("sendonly")
    transport = [*lines_starting(offer, "a=ice-"), *lines_starting(offer, "a=fingerprint:")]
    for prefix in ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"):
        offer = without(offer, prefix)
    offer = offer.replace("t=0 0\r\n", "t=0 0\r\n" + "".join(f"{t}\r\n" for t in transport))

    summary = check_offer(offer, max_audio_sections=1, direction="publish")

    assert summary.opus_payload_types == (111,)


def test_check_offer_takes_the_first_opus_payload_type_the_m_line_lists() -> None:
    offer = (
        chromium_offer("sendonly")
        .replace("SAVPF 111 63", "SAVPF 109 111 63")
        .replace(
            "a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus/48000/2\r\na=rtpmap:109 OPUS/48000/2"
        )
    )

    summary = check_offer(offer, max_audio_sections=1, direction="publish")

    assert summary.opus_payload_types == (109,)


# check_offer: refusals, each with the reason the client reads

PUBLISH = chromium_offer("sendonly")
RECEIVE = chromium_offer("recvonly", "recvonly")


@pytest.mark.parametrize(
    ("offer", "direction", "reason"),
    [
        pytest.param("", "publish", r"^offer is not SDP: it is empty$", id="empty"),
        pytest.param(
            "GET / HTTP/1.1\r\nHost: x\r\n", "publish", r"not SDP: line 1 is not", id="http"
        ),
        pytest.param(
            '{"sdp": "v=0"}', "publish", r"not SDP: line 1 is not <type>=<value>", id="json"
        ),
        pytest.param(
            PUBLISH.replace("v=0", "v=1", 1), "publish", r"first line must be v=0", id="v=1"
        ),
        pytest.param(
            PUBLISH.split("\r\n", 1)[1], "publish", r"first line must be v=0", id="no-version"
        ),
        pytest.param(
            PUBLISH[: PUBLISH.index("m=")], "publish", r"^offer has no media section", id="no-m"
        ),
        pytest.param(
            chromium_offer("sendonly", extra=VIDEO),
            "publish",
            r"^the service is audio only: m-line 1 \(mid 1\) is m=video$",
            id="video",
        ),
        pytest.param(
            chromium_offer("recvonly", extra=DATA_CHANNEL),
            "receive",
            r"audio only: m-line 1 \(mid 1\) is m=application$",
            id="datachannel",
        ),
        pytest.param(
            chromium_offer(*["recvonly"] * 20),
            "receive",
            r"^offer has 20 audio sections, at most 2 allowed$",
            id="20-m-lines",
        ),
        pytest.param(
            without(PUBLISH, "a=rtpmap:111 opus"),
            "publish",
            r"^m-line 0 \(mid 0\) does not offer Opus",
            id="no-opus",
        ),
        pytest.param(
            PUBLISH.replace("opus/48000/2", "opus/48000/1"),
            "publish",
            r"does not offer Opus",
            id="opus-mono-only",
        ),
        pytest.param(
            PUBLISH.replace("SAVPF 111 63", "SAVPF 63"),
            "publish",
            r"does not offer Opus",
            id="opus-not-on-m-line",
        ),
        pytest.param(
            without(PUBLISH, "a=ice-ufrag:"),
            "publish",
            r"^m-line 0 \(mid 0\) has no a=ice-ufrag, neither there nor at session level$",
            id="no-ufrag",
        ),
        pytest.param(without(RECEIVE, "a=ice-pwd:"), "receive", r"has no a=ice-pwd", id="no-pwd"),
        pytest.param(
            without(PUBLISH, "a=fingerprint:"),
            "publish",
            r"has no a=fingerprint",
            id="no-fingerprint",
        ),
        pytest.param(
            without(PUBLISH, "a=setup:"),
            "publish",
            r"^m-line 0 \(mid 0\) has no a=setup, neither there nor at session level$",
            id="no-setup",
        ),
        pytest.param(
            PUBLISH.replace("a=fingerprint:sha-256 D2:", "a=fingerprint:sha-256 zz:"),
            "publish",
            r"has a malformed a=fingerprint",
            id="bad-fingerprint",
        ),
        pytest.param(
            without(RECEIVE, "a=mid:1"), "receive", r"^m-line 1 has no a=mid$", id="no-mid"
        ),
        pytest.param(
            RECEIVE.replace("a=mid:1", "a=mid:0"),
            "receive",
            r"^m-line 1 repeats mid 0",
            id="same-mid",
        ),
        pytest.param(
            RECEIVE,
            "publish",
            r"^a publish offer has exactly one audio section, this one has 2$",
            id="publish-two",
        ),
        pytest.param(
            chromium_offer("recvonly"),
            "publish",
            r"^a publish offer must let the client send: m-line 0 \(mid 0\) is recvonly",
            id="publish-recvonly",
        ),
        pytest.param(
            without(PUBLISH, "a=sendonly").replace("t=0 0", "t=0 0\r\na=inactive"),
            "publish",
            r"is inactive, use sendonly or sendrecv$",
            id="publish-session-inactive",
        ),
        pytest.param(
            chromium_offer("recvonly", "sendonly"),
            "receive",
            r"^a receive offer only receives: m-line 1 \(mid 1\) is sendonly, use recvonly$",
            id="receive-sendonly",
        ),
        pytest.param(
            PUBLISH.replace("a=setup:actpass", "a=setup:whenever"),
            "publish",
            r"^offer is not SDP the server can read: KeyError$",
            id="aiortc-cannot-parse",
        ),
        pytest.param(
            PUBLISH + "a=x:" + "y" * MAX_SDP_BYTES + "\r\n",
            "publish",
            rf"^offer is larger than {MAX_SDP_BYTES} bytes$",
            id="too-large",
        ),
        pytest.param(
            PUBLISH + "a=x\r\n" * MAX_SDP_LINES,
            "publish",
            rf"^offer has more than {MAX_SDP_LINES} lines$",
            id="too-many-lines",
        ),
        pytest.param(
            PUBLISH
            + "".join(
                f"a=candidate:{n} 1 udp 2122260223 127.0.0.1 {20000 + n} typ host\r\n"
                for n in range(MAX_CANDIDATES + 1)
            ),
            "publish",
            rf"^m-line 0 \(mid 0\) has {PUBLISH.count('a=candidate:') + MAX_CANDIDATES + 1} "
            rf"candidates, at most {MAX_CANDIDATES} allowed$",
            id="too-many-candidates",
        ),
        pytest.param(PUBLISH.replace("s=-", "s=\x00"), "publish", r"line 3 is not", id="nul-byte"),
        pytest.param(
            b"v=0\r\n\xff\xfe\x00garbage".decode("utf-8", "surrogateescape"),
            "publish",
            r"^offer is not SDP: it is not UTF-8 text$",
            id="garbage-bytes",
        ),
    ],
)
def test_check_offer_refuses_with_reason(offer: str, direction: Intent, reason: str) -> None:
    with pytest.raises(BadOffer, match=reason):
        check_offer(offer, max_audio_sections=2, direction=direction)


def test_bad_offer_carries_its_reason_and_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="audio only") as raised:
        check_offer(
            chromium_offer("sendonly", extra=VIDEO), max_audio_sections=2, direction="publish"
        )

    assert isinstance(raised.value, BadOffer)
    assert raised.value.reason == "the service is audio only: m-line 1 (mid 1) is m=video"


def test_check_offer_keeps_what_aiortc_raised_as_the_cause() -> None:
    offer = PUBLISH.replace("a=setup:actpass", "a=setup:whenever")

    with pytest.raises(BadOffer) as raised:
        check_offer(offer, max_audio_sections=1, direction="publish")

    assert isinstance(raised.value.__cause__, KeyError)


# check_offer: whatever arrives, it answers with a summary or a BadOffer

CHROMIUM_LINES = chromium_offer("recvonly", "sendonly").splitlines()


def passes_or_refuses(sdp: str, direction: Intent) -> None:
    with contextlib.suppress(BadOffer):
        check_offer(sdp, max_audio_sections=3, direction=direction)


@settings(max_examples=300)
@given(st.text(), st.sampled_from(["publish", "receive"]))
def test_check_offer_on_any_text_passes_or_raises_bad_offer(text: str, direction: Intent) -> None:
    passes_or_refuses(text, direction)


@settings(max_examples=300)
@given(st.binary())
def test_check_offer_on_any_bytes_passes_or_raises_bad_offer(data: bytes) -> None:
    passes_or_refuses(data.decode("utf-8", "surrogateescape"), "publish")


def mutated(line: str) -> st.SearchStrategy[str]:
    """The line itself (what shrinking returns to), cut short, dropped, or with text after it."""
    return (
        st.just(line)
        | st.integers(0, len(line) - 1).map(lambda end: line[:end])
        | st.text(max_size=12).map(lambda tail: line + tail)
    )


@settings(max_examples=500)
@given(st.tuples(*map(mutated, CHROMIUM_LINES)), st.sampled_from(["publish", "receive"]))
def test_check_offer_on_mutated_chromium_offer_passes_or_raises_bad_offer(
    lines: tuple[str, ...], direction: Intent
) -> None:
    passes_or_refuses("\r\n".join(line for line in lines if line), direction)


@settings(max_examples=300)
@given(st.text())
def test_rewrites_on_any_text_return_crlf_text(text: str) -> None:
    rewritten = [
        keep_candidates_from(text, LOOPBACK),
        announce_address(text, listen="127.0.0.1", announced="203.0.113.7"),
        with_opus_fmtp(text, OPUS_FMTP),
        with_section_directions(text),
    ]

    assert all("\n" not in out.replace("\r\n", "") for out in rewritten)


# with_section_directions


def directions_aiortc_reads(sdp: str) -> list[str | None]:
    return [media.direction for media in SessionDescription.parse(sdp).media]


def test_with_section_directions_writes_the_session_level_direction_into_each_section() -> None:
    offer = without(chromium_offer("recvonly", "recvonly"), "a=recvonly")
    offer = offer.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n")
    assert directions_aiortc_reads(offer) == [None, None]

    assert directions_aiortc_reads(with_section_directions(offer)) == ["recvonly", "recvonly"]


def test_with_section_directions_keeps_a_sections_own_direction_over_the_session_level_one() -> (
    None
):
    offer = chromium_offer("sendonly", "recvonly").replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n")

    assert directions_aiortc_reads(with_section_directions(offer)) == ["sendonly", "recvonly"]


def test_with_section_directions_makes_a_section_without_any_direction_sendrecv() -> None:
    offer = without(PUBLISH, "a=sendonly")

    rewritten = with_section_directions(offer)

    assert directions_aiortc_reads(rewritten) == ["sendrecv"]
    assert without(rewritten, "a=sendrecv") == offer


# keep_candidates_from


def test_keep_candidates_from_loopback_keeps_only_loopback_candidates() -> None:
    kept = keep_candidates_from(PUBLISH, LOOPBACK)

    assert candidate_addresses(kept) == ["127.0.0.1", "127.0.0.1"]


def test_keep_candidates_from_leaves_every_other_line_alone() -> None:
    kept = keep_candidates_from(PUBLISH, LOOPBACK)

    assert without(kept, "a=candidate:") == without(PUBLISH, "a=candidate:")


def test_keep_candidates_from_everywhere_drops_only_mdns_candidates() -> None:
    kept = keep_candidates_from(PUBLISH, EVERYWHERE)

    assert candidate_addresses(kept) == [
        "127.0.0.1",
        "10.20.30.40",
        "2001:db8:4:2::1f2e",
        "127.0.0.1",
    ]


@pytest.mark.parametrize(
    "networks",
    [
        pytest.param([ipaddress.ip_network("::1/128")], id="ipv6-loopback"),
        pytest.param([ipaddress.ip_network("10.0.0.0/8")], id="private"),
    ],
)
def test_keep_candidates_from_keeps_nothing_outside_the_networks(
    networks: list[IPNetwork],
) -> None:
    kept = keep_candidates_from(PUBLISH, networks)

    assert all(
        any(ipaddress.ip_address(address) in network for network in networks)
        for address in candidate_addresses(kept)
    )


def test_keep_candidates_from_drops_candidate_lines_that_do_not_parse() -> None:
    offer = PUBLISH.replace("typ host generation 0 network-id 1", "typo host", 1)

    kept = keep_candidates_from(offer, EVERYWHERE)

    assert len(candidate_addresses(kept)) == 3


async def test_keep_candidates_from_filters_a_real_aiortc_offer(
    peer_connection: PeerConnections,
) -> None:
    offer = await aiortc_offer(peer_connection, "sendonly")  # gathered on loopback (conftest)

    assert set(candidate_addresses(keep_candidates_from(offer, LOOPBACK))) == {"127.0.0.1"}
    assert (
        candidate_addresses(keep_candidates_from(offer, [ipaddress.ip_network("10.0.0.0/8")])) == []
    )


def test_keep_candidates_from_outputs_crlf_from_lf_input() -> None:
    kept = keep_candidates_from(PUBLISH.replace("\r\n", "\n"), EVERYWHERE)

    assert kept == keep_candidates_from(PUBLISH, EVERYWHERE)


# announce_address


def test_announce_address_rewrites_host_candidates_and_connection_line() -> None:
    answer = announce_address(SERVER_ANSWER, listen="127.0.0.1", announced="203.0.113.7")

    assert lines_starting(answer, "c=") == ["c=IN IP4 203.0.113.7"]
    assert candidate_addresses(answer) == ["203.0.113.7", "198.51.100.9", "::1"]


def test_announce_address_leaves_related_address_of_srflx_candidates() -> None:
    answer = announce_address(SERVER_ANSWER, listen="127.0.0.1", announced="203.0.113.7")

    assert "typ srflx raddr 127.0.0.1 rport 50304" in answer


def test_announce_address_to_ipv6_writes_ip6_connection_line() -> None:
    answer = announce_address(SERVER_ANSWER, listen="127.0.0.1", announced="2001:db8::7")

    assert lines_starting(answer, "c=") == ["c=IN IP6 2001:db8::7"]


def test_announce_address_equal_to_listen_leaves_the_answer_unchanged() -> None:
    answer = announce_address(SERVER_ANSWER, listen="127.0.0.1", announced="127.0.0.1")

    assert answer == SERVER_ANSWER


def test_announce_address_that_is_not_an_ip_raises_value_error() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        announce_address(SERVER_ANSWER, listen="127.0.0.1", announced="sfu.example.com")


# with_opus_fmtp

EXPECTED_FMTP = (
    "minptime=10;useinbandfec=1;stereo=0;sprop-stereo=0;maxplaybackrate=16000;"
    "sprop-maxcapturerate=16000;maxaveragebitrate=32000"
)


def test_with_opus_fmtp_replaces_chromium_opus_parameters() -> None:
    offer = with_opus_fmtp(RECEIVE, OPUS_FMTP)

    assert lines_starting(offer, "a=fmtp:111 ") == [f"a=fmtp:111 {EXPECTED_FMTP}"] * 2


def test_with_opus_fmtp_leaves_other_codecs_fmtp_alone() -> None:
    offer = with_opus_fmtp(RECEIVE, OPUS_FMTP)

    assert lines_starting(offer, "a=fmtp:63 ") == ["a=fmtp:63 111/111"] * 2


def test_with_opus_fmtp_adds_the_line_after_the_opus_rtpmap() -> None:
    answer = with_opus_fmtp(SERVER_ANSWER, OPUS_FMTP)

    lines = answer.splitlines()
    assert lines[lines.index("a=rtpmap:96 opus/48000/2") + 1] == f"a=fmtp:96 {EXPECTED_FMTP}"


def test_with_opus_fmtp_leaves_non_audio_sections_alone() -> None:
    offer = chromium_offer("sendonly", extra=VIDEO.replace("VP8/90000", "opus/48000/2"))

    rewritten = with_opus_fmtp(offer, OPUS_FMTP)

    assert lines_starting(rewritten, "a=fmtp:96") == []


def test_with_opus_fmtp_result_parses_with_aiortc() -> None:
    answer = SessionDescription.parse(with_opus_fmtp(SERVER_ANSWER, {"minptime": 10}))

    opus = answer.media[0].rtp.codecs[0]
    assert opus.parameters == {"minptime": 10}


async def test_with_opus_fmtp_answer_is_accepted_by_an_aiortc_client(
    peer_connection: PeerConnections,
) -> None:
    client, server = peer_connection(), peer_connection()
    client.addTransceiver("audio", direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    offer = keep_candidates_from(client.localDescription.sdp, LOOPBACK)
    await server.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await server.setLocalDescription(await server.createAnswer())
    answer = keep_candidates_from(with_opus_fmtp(server.localDescription.sdp, OPUS_FMTP), LOOPBACK)

    await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    assert client.signalingState == "stable"
    negotiated = SessionDescription.parse(client.remoteDescription.sdp).media[0].rtp.codecs[0]
    assert {key: str(value) for key, value in negotiated.parameters.items()} == {
        key: str(value) for key, value in OPUS_FMTP.items()
    }


def test_only_opus_leaves_opus_the_single_payload_type_of_each_audio_section() -> None:
    offer = chromium_offer("sendonly", "recvonly")

    kept = only_opus(offer)

    assert [line for line in kept.split("\r\n") if line.startswith("m=")] == [
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    ]
    for gone in ("G722", "PCMU", "red/48000", "fmtp:63", "telephone-event"):
        assert gone not in kept
    assert kept.count("a=rtcp-fb:111 transport-cc") == 2
    summary = check_offer(only_opus(PUBLISH), max_audio_sections=1, direction="publish")
    assert summary.opus_payload_types == (111,)
