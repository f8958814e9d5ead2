"""Whisper separation's guards in the media plane, each removable by a test's monkeypatch.

(b) the router's refusal, (c) the customer's consumer having no slot a supervisor fits. Either
alone keeps a supervisor from the customer, so a test of one removes the other, and proves its
own check fails once its guard is removed as well (``tests.guards.fails_without``).
"""

from __future__ import annotations

import pytest

from events.room import Role
from services.media import router as router_module
from services.media.router import Consumer, Producer


def stub_out_refusal(patch: pytest.MonkeyPatch) -> None:
    """Guard (b) removed: the router refuses no route."""
    patch.setattr(router_module, "refusal", lambda producer_role, consumer_role: None)


def give_the_customer_a_coach_slot(patch: pytest.MonkeyPatch) -> None:
    """Half of guard (c) removed: the customer's consumer is built with a coach slot."""
    slot_names = router_module.slot_names

    def with_a_coach_slot(role: Role, coach_slots: int) -> tuple[str, ...]:
        return slot_names(role, coach_slots) + (("coach-1",) if role is Role.CUSTOMER else ())

    patch.setattr(router_module, "slot_names", with_a_coach_slot)


def let_a_supervisor_fill_any_slot(patch: pytest.MonkeyPatch) -> None:
    """The other half of guard (c) removed: a supervisor fills a free slot of any kind."""
    free_slot_for = Consumer.free_slot_for

    def any_free_slot(consumer: Consumer, producer: Producer) -> str | None:
        if producer.role is not Role.SUPERVISOR:
            return free_slot_for(consumer, producer)
        return next((s for s in consumer.tracks if s not in consumer.feeding), None)

    patch.setattr(Consumer, "free_slot_for", any_free_slot)


def remove_slot_kinds(patch: pytest.MonkeyPatch) -> None:
    """Guard (c) removed: the customer's consumer has a slot a supervisor can take."""
    give_the_customer_a_coach_slot(patch)
    let_a_supervisor_fill_any_slot(patch)
