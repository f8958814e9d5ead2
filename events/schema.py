"""The JSON Schema of stored envelopes, for integrators who validate what they consume."""

from __future__ import annotations

from typing import Any

import msgspec

from events.envelope import Envelope


def envelope_json_schema() -> dict[str, Any]:
    schema = msgspec.json.schema(Envelope)
    schema["title"] = "Earpiece room event envelope"
    return schema
