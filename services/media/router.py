"""A room's Router: the only thing that connects a Producer to a Consumer (mediasoup's words).

A Producer is one participant's microphone; a Consumer is what one participant receives, as
a fixed set of slots negotiated once, when its connection is set up:

    customer     agent
    agent        customer, coach-1 … coach-N
    supervisor   customer, agent

Connecting a producer fills a free slot of the matching kind; from then on each of its
packets is pushed to that slot's track. Making a coach audible is therefore a pointer change,
never an SDP renegotiation, and the customer's connection has exactly one slot, for the agent:
nothing of a supervisor can ever be negotiated into it.

The router is the second guard of whisper separation, independent of the room decider:
whatever it is asked, it refuses (raises ``ForbiddenRoute``, logs a security event and counts
it) to connect a supervisor's producer to a customer's consumer.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from events.room import Role
from projections.routes import AudioRoute
from services.errors import ForbiddenRoute, NoFreeSlot, UnknownEndpoint
from services.media.opus_forwarding import OpusPacket, SlotTrack

log = logging.getLogger(__name__)
security_log = logging.getLogger("earpiece.security")

FORWARDED_PACKETS = Counter(
    "earpiece_forwarded_packets", "Opus packets handed to a consumer's slot, one per slot fed"
)
FORWARDED_BYTES = Counter(
    "earpiece_forwarded_bytes", "Opus payload bytes handed to consumers' slots, per slot fed"
)
FORBIDDEN_ROUTES = Counter(
    "earpiece_forbidden_routes",
    "Connections the router refused to make because of whisper separation",
)


def refusal(producer_role: Role, consumer_role: Role) -> str | None:
    """Why audio from ``producer_role`` may never reach ``consumer_role`` (None: it may)."""
    if producer_role is Role.SUPERVISOR and consumer_role is Role.CUSTOMER:
        return "a supervisor's voice never reaches the customer"
    return None


def slot_names(role: Role, coach_slots: int) -> tuple[str, ...]:
    match role:
        case Role.CUSTOMER:
            return ("agent",)
        case Role.AGENT:
            return ("customer", *(f"coach-{n}" for n in range(1, coach_slots + 1)))
        case Role.SUPERVISOR:
            return ("customer", "agent")


def _slot_kind(producer_role: Role) -> str:
    return "coach" if producer_role is Role.SUPERVISOR else producer_role.value


class Producer:
    def __init__(self, subject: str, role: Role) -> None:
        self.subject = subject
        self.role = role
        self._tracks: list[SlotTrack] = []
        self.packets = 0

    def attach(self, track: SlotTrack) -> None:
        self._tracks.append(track)

    def detach(self, track: SlotTrack) -> None:
        self._tracks.remove(track)

    def deliver(self, packet: OpusPacket) -> None:
        """Forward one received packet to every slot this producer is connected to."""
        self.packets += 1
        if self._tracks:
            FORWARDED_PACKETS.inc(len(self._tracks))
            FORWARDED_BYTES.inc(len(self._tracks) * len(packet.payload))
        for track in self._tracks:
            track.push(packet, self)


class Consumer:
    def __init__(self, subject: str, role: Role, coach_slots: int) -> None:
        self.subject = subject
        self.role = role
        self.tracks = {name: SlotTrack() for name in slot_names(role, coach_slots)}
        """Slot name → the track sent to this consumer in that slot, in negotiation order."""
        self.feeding: dict[str, Producer] = {}

    def slot_of(self, producer: Producer) -> str | None:
        return next((slot for slot, p in self.feeding.items() if p is producer), None)

    def free_slot_for(self, producer: Producer) -> str | None:
        kind = _slot_kind(producer.role)
        return next(
            (s for s in self.tracks if s.split("-")[0] == kind and s not in self.feeding), None
        )


class Router:
    def __init__(self, room_id: str, *, coach_slots: int = 4) -> None:
        self.room_id = room_id
        self.coach_slots = coach_slots
        self.producers: dict[str, Producer] = {}
        self.consumers: dict[str, Consumer] = {}

    def add_producer(self, subject: str, role: Role) -> Producer:
        self.remove_producer(subject)  # a participant publishing again replaces the old one
        producer = self.producers[subject] = Producer(subject, role)
        return producer

    def add_consumer(self, subject: str, role: Role) -> Consumer:
        self.remove_consumer(subject)
        consumer = self.consumers[subject] = Consumer(subject, role, self.coach_slots)
        return consumer

    def remove_producer(self, subject: str) -> None:
        for route in [r for r in self.connections() if r.producer == subject]:
            self.disconnect(route)
        self.producers.pop(subject, None)

    def remove_consumer(self, subject: str) -> None:
        for route in [r for r in self.connections() if r.consumer == subject]:
            self.disconnect(route)
        self.consumers.pop(subject, None)

    def can_connect(self, route: AudioRoute) -> bool:
        """Both ends are present: the route can be made now (the guard is still checked)."""
        return route.producer in self.producers and route.consumer in self.consumers

    def connect(self, route: AudioRoute) -> str:
        """Feed ``route.producer``'s packets to a free slot of ``route.consumer``; its name."""
        producer, consumer = self._ends(route)
        reason = refusal(producer.role, consumer.role)
        if reason is not None:
            FORBIDDEN_ROUTES.inc()
            security_log.error(
                "SECURITY room=%s refused route %s (%s) → %s (%s): %s",
                *(self.room_id, producer.subject, producer.role),
                *(consumer.subject, consumer.role, reason),
            )
            raise ForbiddenRoute(self.room_id, producer.subject, consumer.subject, reason)
        existing = consumer.slot_of(producer)
        if existing is not None:
            return existing
        slot = consumer.free_slot_for(producer)
        if slot is None:
            raise NoFreeSlot(
                f"room {self.room_id!r}: {consumer.subject} has no free slot for "
                f"{producer.subject} ({producer.role})"
            )
        consumer.feeding[slot] = producer
        producer.attach(consumer.tracks[slot])
        return slot

    def disconnect(self, route: AudioRoute) -> None:
        producer, consumer = self._ends(route)
        slot = consumer.slot_of(producer)
        if slot is not None:
            del consumer.feeding[slot]
            producer.detach(consumer.tracks[slot])

    def connections(self) -> frozenset[AudioRoute]:
        return frozenset(
            AudioRoute(producer=p.subject, consumer=c.subject)
            for c in self.consumers.values()
            for p in c.feeding.values()
        )

    def _ends(self, route: AudioRoute) -> tuple[Producer, Consumer]:
        try:
            return self.producers[route.producer], self.consumers[route.consumer]
        except KeyError as exc:
            raise UnknownEndpoint(
                f"room {self.room_id!r} has no {exc.args[0]!r} to route {route}"
            ) from exc
