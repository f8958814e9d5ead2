from __future__ import annotations

import datetime as dt
import json

import msgspec
import pytest

import events
from events.envelope import Envelope, EnvelopeCodec, JsonObject
from events.errors import MalformedEvent
from events.room import CueSent, WhisperStarted
from tests.support import REPO

T0 = dt.datetime(2026, 11, 26, 9, 30, tzinfo=dt.UTC)


def envelope(**changes: object) -> Envelope:
    fields: dict[str, object] = {
        "event_id": "e1",
        "room_id": "room-1",
        "version": 1,
        "time": T0,
        "actor": "sup-1",
        "event": WhisperStarted(coach="sup-1"),
    }
    return Envelope(**(fields | changes))  # type: ignore[arg-type]


def test_codec_round_trips_an_envelope_of_the_current_schema() -> None:
    codec = EnvelopeCodec()
    original = envelope(causation_id="cmd-1", correlation_id="call-1")

    raw = codec.encode(original)

    assert json.loads(raw)["event"] == {"type": "whisper_started", "coach": "sup-1"}
    assert codec.decode(raw) == original


def test_codec_upcasts_an_envelope_written_under_an_older_schema() -> None:
    # Suppose schema 2 renamed cue_sent's "body" to "text": schema-1 envelopes still read.
    def body_to_text(document: JsonObject) -> JsonObject:
        if document["event"]["type"] == "cue_sent":
            document["event"]["text"] = document["event"].pop("body")
        return document

    codec = EnvelopeCodec({1: body_to_text}, current=2)
    old = msgspec.json.encode(
        {
            "event_id": "e1",
            "room_id": "room-1",
            "version": 3,
            "time": "2026-11-26T09:30:00Z",
            "actor": "sup-1",
            "schema_version": 1,
            "event": {"type": "cue_sent", "cue_id": "c1", "coach": "sup-1", "body": "Slow down"},
        }
    )

    decoded = codec.decode(old)

    assert decoded.event == CueSent(cue_id="c1", coach="sup-1", text="Slow down")
    assert (decoded.version, decoded.time, decoded.schema_version) == (3, T0, 2)


def test_codec_without_an_upcaster_for_an_old_schema_says_so() -> None:
    codec = EnvelopeCodec({}, current=2)

    with pytest.raises(MalformedEvent, match="no upcaster from schema_version 1"):
        codec.decode(EnvelopeCodec().encode(envelope()))


def test_codec_refuses_an_envelope_from_a_newer_writer() -> None:
    raw = EnvelopeCodec().encode(envelope(schema_version=9))

    with pytest.raises(MalformedEvent, match="schema_version 9 is not one this reader knows"):
        EnvelopeCodec().decode(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"event_id": "e1"}', "missing required field `room_id`"),
        (
            EnvelopeCodec().encode(envelope()).replace(b"whisper_started", b"whisper_shouted"),
            "Invalid value 'whisper_shouted' - at `$.event.type`",
        ),
    ],
)
def test_codec_names_what_is_wrong_with_a_malformed_envelope(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason.replace("$", r"\$").replace(".", r"\.")):
        EnvelopeCodec().decode(raw)


def test_events_exports_exactly_its_public_surface() -> None:
    exported = {name for name in dir(events) if not name.startswith("_")}
    modules = {
        *("envelope", "errors", "feed", "keys", "retry", "room", "schema", "store"),
        *("stream_reader", "room_leases"),
    }

    assert set(events.__all__) == exported - modules
    assert len(events.__all__) == len(set(events.__all__))


def test_published_json_schema_matches_the_code() -> None:
    published = REPO / "docs" / "event-schema.json"

    assert json.loads(published.read_text()) == events.envelope_json_schema(), (
        "regenerate it: earpiece schema > docs/event-schema.json"
    )
