"""The envelope every stored event travels in, and the codec that reads old ones.

An envelope answers who, when and where: the room, the event's 1-based position in that
room's stream (``version``), the writer's wall-clock time, the subject that caused it, and the
ids that tie it to the command (``causation_id``) and conversation (``correlation_id``) it
came from.

``schema_version`` lets the shape change over time. Envelopes of the current schema decode
straight into Structs; older ones are decoded as plain JSON, passed through the chain of
upcasters (``{1: v1_to_v2, 2: v2_to_v3, ...}``) and then converted.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import msgspec

from events.errors import MalformedEvent
from events.room import RoomEvent

SCHEMA_VERSION = 1

JsonObject = dict[str, Any]
Upcaster = Callable[[JsonObject], JsonObject]
"""Takes an envelope of schema ``n`` as plain JSON and returns it as schema ``n + 1``."""

# No schema has been retired yet; the first change to an event's meaning adds ``{1: ...}``.
UPCASTERS: Mapping[int, Upcaster] = {}


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    event_id: Annotated[str, _doc("Unique id of this event (32 hex digits).")]
    room_id: Annotated[str, _doc("The room whose stream holds the event.")]
    version: Annotated[int, msgspec.Meta(ge=1), _doc("1-based position in the room's stream.")]
    time: Annotated[dt.datetime, msgspec.Meta(tz=True), _doc("When it was appended (UTC).")]
    actor: Annotated[str, _doc("Subject (token `sub`) of whoever caused the event.")]
    event: RoomEvent
    causation_id: Annotated[str | None, _doc("Id of the command that caused it.")] = None
    correlation_id: Annotated[str | None, _doc("Id shared by a conversation of events.")] = None
    epoch: Annotated[
        int | None, _doc("The room lease epoch of the worker that wrote it about its sessions.")
    ] = None
    schema_version: Annotated[int, _doc("Shape of this envelope; older are upcast.")] = (
        SCHEMA_VERSION
    )


def new_event_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class EnvelopeCodec:
    """JSON bytes <-> Envelope, upcasting envelopes written under an older schema."""

    def __init__(
        self, upcasters: Mapping[int, Upcaster] = UPCASTERS, current: int = SCHEMA_VERSION
    ) -> None:
        self._upcasters = upcasters
        self._current = current
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Envelope)

    def encode(self, envelope: Envelope) -> bytes:
        return self._encoder.encode(envelope)

    def decode(self, raw: bytes) -> Envelope:
        try:
            envelope = self._decoder.decode(raw)
        except msgspec.DecodeError:
            envelope = None  # perhaps an older shape: the slow path below tells
        if envelope is not None and envelope.schema_version == self._current:
            return envelope
        return self._upcast(raw)

    def _upcast(self, raw: bytes) -> Envelope:
        try:
            document = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise MalformedEvent(f"not JSON ({exc})", raw) from exc
        if not isinstance(document, dict):
            raise MalformedEvent("not a JSON object", raw)
        version = document.get("schema_version", 1)
        if not isinstance(version, int) or version < 1 or version > self._current:
            raise MalformedEvent(
                f"schema_version {version!r} is not one this reader knows (1-{self._current})",
                raw,
            )
        while version < self._current:
            upcaster = self._upcasters.get(version)
            if upcaster is None:
                raise MalformedEvent(f"no upcaster from schema_version {version}", raw)
            document = upcaster(document)
            version += 1
            document["schema_version"] = version
        try:
            return msgspec.convert(document, Envelope)
        except msgspec.ValidationError as exc:
            raise MalformedEvent(str(exc), raw) from exc
