from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.room import Role
from projections.routes import AudioRoute
from services.errors import ForbiddenRoute, NoFreeSlot, UnknownEndpoint
from services.media.opus_forwarding import FRAME_SAMPLES, OpusPacket
from services.media.router import FORBIDDEN_ROUTES, Router
from tests.guards import fails_without
from tests.services.media.guards import (
    give_the_customer_a_coach_slot,
    let_a_supervisor_fill_any_slot,
    remove_slot_kinds,
    stub_out_refusal,
)

PARTICIPANTS = {
    "cust": Role.CUSTOMER,
    "agent": Role.AGENT,
    "sup-1": Role.SUPERVISOR,
    "sup-2": Role.SUPERVISOR,
}


def full_router(coach_slots: int = 4) -> Router:
    router = Router("room-1", coach_slots=coach_slots)
    for subject, role in PARTICIPANTS.items():
        router.add_producer(subject, role)
        router.add_consumer(subject, role)
    return router


# Each guard of the router is tested with the other one removed, since either alone keeps a
# supervisor from the customer and would hide the other's absence; and each test's check is
# shown to fail once its own guard is removed too.


def assert_supervisor_to_customer_is_refused_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.clear()  # run twice by the proof: the first run's log must not pass the second
    router = full_router()
    before = FORBIDDEN_ROUTES._value.get()

    with (
        caplog.at_level(logging.ERROR, logger="earpiece.security"),
        pytest.raises(ForbiddenRoute, match="refused sup-1 → cust: a supervisor's voice"),
    ):
        router.connect(AudioRoute(producer="sup-1", consumer="cust"))

    assert router.connections() == frozenset()
    assert FORBIDDEN_ROUTES._value.get() == before + 1
    assert "SECURITY room=room-1 refused route sup-1 (supervisor) → cust (customer)" in caplog.text


def test_connect_supervisor_to_customer_is_refused_logged_and_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_slot_kinds(monkeypatch)  # else NoFreeSlot, not the refusal, would stop the route

    assert_supervisor_to_customer_is_refused_logged_and_counted(caplog)


def test_refused_logged_and_counted_check_fails_once_refusal_is_stubbed_out(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_slot_kinds(monkeypatch)

    failure = fails_without(
        lambda: assert_supervisor_to_customer_is_refused_logged_and_counted(caplog),
        lambda: stub_out_refusal(monkeypatch),
    )

    assert "DID NOT RAISE" in failure


def assert_supervisor_to_customer_finds_no_slot() -> None:
    router = full_router()

    with pytest.raises(NoFreeSlot, match="cust has no free slot for sup-1"):
        router.connect(AudioRoute(producer="sup-1", consumer="cust"))
    router.connect(AudioRoute(producer="agent", consumer="cust"))
    with pytest.raises(NoFreeSlot, match="cust has no free slot for sup-2"):
        router.connect(AudioRoute(producer="sup-2", consumer="cust"))

    assert {p.subject for p in router.consumers["cust"].feeding.values()} == {"agent"}


def test_connect_supervisor_to_customer_finds_no_slot_once_refusal_is_stubbed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stub_out_refusal(monkeypatch)  # else the refusal stops the route before any slot is sought

    assert_supervisor_to_customer_finds_no_slot()


@pytest.mark.parametrize(
    "remove_guard",
    [give_the_customer_a_coach_slot, let_a_supervisor_fill_any_slot],
    ids=["coach-slot", "any-kind"],
)
def test_no_slot_check_fails_once_the_customer_has_a_slot_a_supervisor_fits(
    monkeypatch: pytest.MonkeyPatch, remove_guard: Callable[[pytest.MonkeyPatch], None]
) -> None:
    stub_out_refusal(monkeypatch)

    failure = fails_without(
        assert_supervisor_to_customer_finds_no_slot, lambda: remove_guard(monkeypatch)
    )

    assert "DID NOT RAISE" in failure


def test_customer_consumer_has_one_slot_and_it_is_the_agents() -> None:
    router = full_router()

    assert list(router.consumers["cust"].tracks) == ["agent"]
    assert router.connect(AudioRoute(producer="agent", consumer="cust")) == "agent"


def test_coaches_take_the_agents_coach_slots_in_order_and_free_them_on_disconnect() -> None:
    router = full_router(coach_slots=1)

    assert router.connect(AudioRoute(producer="sup-1", consumer="agent")) == "coach-1"
    with pytest.raises(NoFreeSlot, match="agent has no free slot for sup-2"):
        router.connect(AudioRoute(producer="sup-2", consumer="agent"))
    router.disconnect(AudioRoute(producer="sup-1", consumer="agent"))
    assert router.connect(AudioRoute(producer="sup-2", consumer="agent")) == "coach-1"


def test_connecting_twice_keeps_one_slot() -> None:
    router = full_router()
    route = AudioRoute(producer="sup-1", consumer="agent")

    assert router.connect(route) == router.connect(route) == "coach-1"
    assert router.connections() == {route}


def test_route_to_an_absent_participant_is_an_unknown_endpoint() -> None:
    router = full_router()

    with pytest.raises(UnknownEndpoint, match="no 'nobody'"):
        router.connect(AudioRoute(producer="nobody", consumer="agent"))


def test_producer_packets_reach_only_its_connected_slots() -> None:
    router = full_router()
    router.connect(AudioRoute(producer="sup-1", consumer="agent"))
    router.connect(AudioRoute(producer="agent", consumer="sup-1"))

    router.producers["sup-1"].deliver(OpusPacket(b"\xfc", 1000, 1.0))

    queued = {
        (consumer.subject, slot): track._queue.qsize()
        for consumer in router.consumers.values()
        for slot, track in consumer.tracks.items()
    }
    assert {key for key, size in queued.items() if size} == {("agent", "coach-1")}


def test_removing_a_producer_removes_its_routes() -> None:
    router = full_router()
    router.connect(AudioRoute(producer="sup-1", consumer="agent"))
    router.connect(AudioRoute(producer="cust", consumer="agent"))

    router.remove_producer("sup-1")

    assert router.connections() == {AudioRoute(producer="cust", consumer="agent")}


def test_slot_switching_speakers_keeps_its_timestamps_continuous() -> None:
    router = full_router(coach_slots=1)
    agent_slot = router.consumers["agent"].tracks["coach-1"]
    router.connect(AudioRoute(producer="sup-1", consumer="agent"))
    for n in range(3):
        router.producers["sup-1"].deliver(OpusPacket(b"a", 5_000_000 + n * 960, 10.0 + n * 0.02))
    router.disconnect(AudioRoute(producer="sup-1", consumer="agent"))
    router.connect(AudioRoute(producer="sup-2", consumer="agent"))
    router.producers["sup-2"].deliver(OpusPacket(b"b", 77, 10.54))  # 0.5 s after the last one

    sent = [agent_slot._queue.get_nowait().pts for _ in range(4)]

    assert sent == [0, 960, 1920, 1920 + round(0.5 * 48_000)]
    assert sent[3] - sent[2] >= FRAME_SAMPLES


def assert_no_sequence_connects_a_supervisor_to_the_customer(
    requests: list[tuple[str, str, str]],
) -> None:
    router = full_router(coach_slots=2)
    for op, producer, consumer in requests:
        route = AudioRoute(producer=producer, consumer=consumer)
        if op == "republish":
            router.add_producer(producer, PARTICIPANTS[producer])
            continue
        with contextlib.suppress(ForbiddenRoute, NoFreeSlot):
            router.connect(route) if op == "connect" else router.disconnect(route)
        customer_hears = {p.role for p in router.consumers["cust"].feeding.values()}
        assert customer_hears <= {Role.AGENT}


request_sequences = st.lists(
    st.tuples(
        st.sampled_from(["connect", "disconnect", "republish"]),
        st.sampled_from(sorted(PARTICIPANTS)),
        st.sampled_from(sorted(PARTICIPANTS)),
    ),
    max_size=40,
)
router_property = settings(max_examples=200, deadline=None, derandomize=True, database=None)


@router_property
@given(request_sequences)
def test_no_sequence_of_requests_connects_a_supervisor_to_the_customer(
    requests: list[tuple[str, str, str]],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        remove_slot_kinds(patch)  # the refusal alone must hold: NoFreeSlot is suppressed
        assert_no_sequence_connects_a_supervisor_to_the_customer(requests)


@router_property
@given(request_sequences)
def test_no_sequence_of_unrefused_requests_gives_the_customer_a_supervisor(
    requests: list[tuple[str, str, str]],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        stub_out_refusal(patch)  # the slots alone must hold
        assert_no_sequence_connects_a_supervisor_to_the_customer(requests)


def test_sequence_property_fails_once_refusal_is_stubbed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failure = fails_without(
        test_no_sequence_of_requests_connects_a_supervisor_to_the_customer,
        lambda: stub_out_refusal(monkeypatch),
    )

    assert "SUPERVISOR" in failure


@pytest.mark.parametrize(
    "remove_guard",
    [give_the_customer_a_coach_slot, let_a_supervisor_fill_any_slot],
    ids=["coach-slot", "any-kind"],
)
def test_unrefused_sequence_property_fails_once_the_customer_has_a_slot_a_supervisor_fits(
    monkeypatch: pytest.MonkeyPatch, remove_guard: Callable[[pytest.MonkeyPatch], None]
) -> None:
    failure = fails_without(
        test_no_sequence_of_unrefused_requests_gives_the_customer_a_supervisor,
        lambda: remove_guard(monkeypatch),
    )

    assert "SUPERVISOR" in failure
