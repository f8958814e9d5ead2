"""The route reconciler: follows the room's stream → evolve → routes(state) → Router applies
the difference (the data path's room actor).

One per active room, in the media worker that hosts the room's connections. It folds
every event of the room into its state, computes the routes that state implies and moves the
router toward them: routes no longer wanted are removed first, then new ones are added. It
also reconciles when a participant's connection comes or goes, since a route can be made only
while both ends are connected. Every change it makes, and every one the router refuses, goes
to the room's route log with the version that asked for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from events.room import Role
from events.stream_reader import StreamReader
from projections.decider import RoomState
from projections.routes import AudioRoute, routes
from services.errors import RouterError
from services.media.route_log import RouteLog, RouteOp
from services.media.router import Consumer, Producer, Router
from services.streams.room_states import RoomStates, follow_states

log = logging.getLogger(__name__)


class RouteReconciler:
    def __init__(
        self, room_id: str, reader: StreamReader, router: Router, route_log: RouteLog
    ) -> None:
        self.room_id = room_id
        self.reader = reader
        self.router = router
        self.route_log = route_log
        self.state: RoomState | None = None
        self.failure = ""
        """Why the room's stream cannot be followed now ("" while it can): coaches are silent."""

    async def run(self) -> None:
        """Follow the room until it is closed (or the task is cancelled)."""
        self.state = await RoomStates(self.reader.store).current(self.room_id)
        self.failure = ""
        self.reconcile()
        if self.state.closed:
            return
        async for state in follow_states(self.reader, self.state):
            self.state = state
            self.reconcile()
            if self.state.closed:
                return

    def fail_closed(self, failure: str) -> None:
        """The room's stream cannot be followed (``failure`` says why): the state in hand may be
        stale, so no coach is heard until it can be again. Call and agent routes stay."""
        self.failure = failure or "the room's stream cannot be followed"
        self.reconcile()

    def reconcile(self) -> None:
        """Make the router's connections match the routes the current state implies."""
        if self.state is None:
            return  # not loaded yet: run() reconciles once it is
        version = self.state.version
        wanted = {
            r
            for r in routes(self.state)
            if self.router.can_connect(r) and not (self.failure and self._from_a_coach(r))
        }
        applied = self.router.connections()
        for route in sorted(applied - wanted, key=_ends):
            self.router.disconnect(route)
            self.route_log.record(RouteOp.REMOVED, route, version, self.failure)
        for route in sorted(wanted - applied, key=_ends):
            try:
                slot = self.router.connect(route)
            except RouterError as exc:
                log.warning("%s", exc)
                self.route_log.record(RouteOp.REFUSED, route, version, str(exc))
                continue
            self.route_log.record(RouteOp.APPLIED, route, version, slot)

    def _from_a_coach(self, route: AudioRoute) -> bool:
        return self.router.producers[route.producer].role is Role.SUPERVISOR

    def add_producer(self, subject: str, role: Role) -> Producer:
        producer = self.router.add_producer(subject, role)
        self.reconcile()
        return producer

    def add_consumer(self, subject: str, role: Role) -> Consumer:
        consumer = self.router.add_consumer(subject, role)
        self.reconcile()
        return consumer

    def remove_producer(self, subject: str) -> None:
        self._log_removals(lambda route: route.producer == subject)
        self.router.remove_producer(subject)

    def remove_consumer(self, subject: str) -> None:
        self._log_removals(lambda route: route.consumer == subject)
        self.router.remove_consumer(subject)

    def _log_removals(self, affected: Callable[[AudioRoute], bool]) -> None:
        version = self.state.version if self.state else 0
        for route in sorted(filter(affected, self.router.connections()), key=_ends):
            self.router.disconnect(route)
            self.route_log.record(RouteOp.REMOVED, route, version, "connection closed")


def _ends(route: AudioRoute) -> tuple[str, str]:
    # A fixed order, so that coaches take the agent's slots in the same order on every replay.
    return (route.consumer, route.producer)
