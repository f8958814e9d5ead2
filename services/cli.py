"""``earpiece``: run the service, mint development tokens, check audit logs, benchmark.

    earpiece serve [--workers N]            HTTP service (+ a local redis-server without REDIS_URL)
    earpiece token --room R --role agent    a development token signed with the service's secret
    earpiece audit verify ROOM              check a room's audit chain against its event stream
    earpiece audit replay ROOM [--version N | --time T]   state and timeline as of then
    earpiece schema                         the JSON Schema of stored envelopes
    earpiece bench store                    event store benchmark (docs/BENCHMARKS.md)
    earpiece bench media [--quick]          media plane against aiortc's MediaRelay, on loopback
    earpiece bench pages [--pages 10,100]   open pages of a room: one shared follower vs one each
    earpiece bench audit                    the audit projection's events/s against commands/s
    earpiece bench fairness                 room B's latency alone and while room A is flooded
    earpiece bench rooms [--rooms 100,1000] one worker as its open rooms grow
    earpiece bench workers                  the forwarding hop and the failover time

Settings come from the environment (README, "Configuration"), read here and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from events.errors import EarpieceError
from events.keys import KeySpace, check_room_id
from events.room import Role
from events.schema import envelope_json_schema
from events.store import EventStore, RedisClient
from projections.audit import replay, verify_against_stream
from services import logs
from services.auth import mint_token
from services.errors import UnknownRoom
from services.media.ice import gather_on
from services.redis_clients import request_client
from services.redis_server import RedisServer
from services.settings import Settings
from services.streams.audit_trail import AuditTrail
from services.streams.presence import new_worker_id

log = logging.getLogger("earpiece")


@contextlib.asynccontextmanager
async def redis_url_for(settings: Settings) -> AsyncIterator[str]:
    """REDIS_URL, or the URL of a local redis-server: the one already running in the data
    directory, or one started (and stopped) here."""
    server: RedisServer | None = None
    redis_dir = Path(settings.data_dir) / "redis"
    url = settings.redis_url or RedisServer.running_in(redis_dir)
    if url is None:
        server = RedisServer(redis_dir, appendfsync=settings.redis_appendfsync)
        server.start()
        log.info("started %s on %s, data in %s", server.binary, server.url, redis_dir)
        url = server.url
    try:
        yield url
    finally:
        if server is not None:
            server.stop()
            log.info("stopped the local redis-server")


@contextlib.asynccontextmanager
async def redis_for(settings: Settings, worker: str = "cli") -> AsyncIterator[RedisClient]:
    """The pool of short requests of ``worker`` to Redis (``redis_url_for``)."""
    async with redis_url_for(settings) as url:
        client = request_client(
            url,
            name=f"earpiece:{worker}:requests",
            connections=settings.redis_connections,
            wait_s=settings.redis_wait_s,
            cluster=settings.redis_cluster,
        )
        try:
            yield client
        finally:
            await client.aclose()


async def serve(settings: Settings) -> None:
    from services.web.app import create_app  # the app is needed only here
    from services.web.server import WorkerServer, server_config

    gather_on(settings.ice_addresses)
    worker = new_worker_id()
    async with redis_for(settings, worker) as client:
        config = server_config(settings, create_app(settings, client, worker))
        await WorkerServer(config).serve()


def store_for(settings: Settings, client: RedisClient) -> EventStore:
    return EventStore(client, KeySpace(settings.namespace, settings.partitions))


async def audit_verify(settings: Settings, room_id: str) -> int:
    async with redis_for(settings) as client:
        store = store_for(settings, client)
        records = await AuditTrail(store).records(room_id)
        envelopes = [envelope async for envelope in store.read_all(room_id)]
    if not envelopes and not records:
        raise UnknownRoom(room_id)
    verification = verify_against_stream(records, envelopes)
    print(json.dumps(msgspec.to_builtins(verification), indent=2))
    return 0 if verification.ok else 1


async def audit_replay(
    settings: Settings, room_id: str, version: int | None, time: dt.datetime | None
) -> int:
    async with redis_for(settings) as client:
        envelopes = [e async for e in store_for(settings, client).read_all(room_id)]
    if not envelopes:
        raise UnknownRoom(room_id)
    result = replay(envelopes, until_version=version, until_time=time)
    body = {"state": result.state, "timeline": result.timeline}
    print(json.dumps(msgspec.to_builtins(body), indent=2))
    return 0


def aware_time(text: str) -> dt.datetime:
    try:
        time = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from exc
    if time.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: add one, e.g. {text}+00:00 (UTC)"
        )
    return time


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="earpiece", description=__doc__.split("\n")[0])
    top.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = top.add_subparsers(dest="command", required=True)

    serve_command = commands.add_parser("serve", help="run the HTTP service")
    serve_command.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, on EARPIECE_PORT, EARPIECE_PORT + 1 ... (one Redis)",
    )

    token = commands.add_parser("token", help="mint a development token")
    token.add_argument("--room", required=True)
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--sub", help="subject (default: <role>-1)")
    token.add_argument("--name", help="display name (default: the subject)")
    token.add_argument("--whisper", action="store_true", help="may whisper (supervisors)")
    token.add_argument("--queue", default="", help="the queue of the call (customers, agents)")
    token.add_argument(
        "--queues", default="", help="comma-separated queues a supervisor coaches (with --room '*')"
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")

    audit = commands.add_parser("audit", help="check or replay a room's audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_commands.add_parser("verify", help="verify the hash chain").add_argument("room")
    replay_parser = audit_commands.add_parser("replay", help="state and timeline as of then")
    replay_parser.add_argument("room")
    until = replay_parser.add_mutually_exclusive_group()
    until.add_argument("--version", type=int)
    until.add_argument("--time", type=aware_time, help="ISO 8601, with zone")

    commands.add_parser("schema", help="print the envelope's JSON Schema")

    bench = commands.add_parser("bench", help="benchmarks (docs/BENCHMARKS.md)")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    store_bench = bench_commands.add_parser("store", help="event store append/follow/recovery")
    store_bench.add_argument("--seconds", type=float, default=5.0, help="per throughput phase")
    store_bench.add_argument("--recovery-events", type=int, default=100_000)
    store_bench.add_argument("--appendfsync", choices=["always", "everysec"], default="always")
    media_bench = bench_commands.add_parser("media", help="latency, whisper switch, CPU, memory")
    media_bench.add_argument("--quick", action="store_true", help="a smoke run (< 60 s)")
    media_bench.add_argument("--phases", help="comma-separated: latency,click,capacity,soak")
    media_bench.add_argument("--packets", type=int, help="latency samples per path (1000)")
    media_bench.add_argument("--switches", type=int, help="press_talk samples (50)")
    media_bench.add_argument("--earpiece-rooms", help="room counts to step through, e.g. 1,4,8")
    media_bench.add_argument("--relay-rooms", help="the same for the MediaRelay baseline")
    media_bench.add_argument("--window", type=float, help="seconds measured per step (5)")
    media_bench.add_argument("--degraded-ms", type=float, help="p99 rise that stops (20)")
    media_bench.add_argument("--soak-seconds", type=float, help="memory soak duration (60)")
    media_bench.add_argument("--soak-rooms", type=int, help="rooms alive at once in the soak (3)")
    audit_bench = bench_commands.add_parser("audit", help="audit events/s against commands/s")
    audit_bench.add_argument("--rooms", type=int, default=20, help="rooms, both phases")
    audit_bench.add_argument("--seconds", type=float, default=5.0, help="of commands")
    audit_bench.add_argument("--events", type=int, default=1000, help="backlog per room")
    fairness_bench = bench_commands.add_parser("fairness", help="room B while room A is flooded")
    fairness_bench.add_argument("--commands", type=int, default=600, help="room B's, per condition")
    fairness_bench.add_argument("--per-s", type=float, default=20.0, help="room B's pace")
    rooms_bench = bench_commands.add_parser("rooms", help="one worker as its open rooms grow")
    rooms_bench.add_argument(
        "--rooms", default="100,300,1000", help="rooms with an open page, per step"
    )
    rooms_bench.add_argument("--publishing", type=int, default=50, help="of them, publishing")
    rooms_bench.add_argument("--samples", type=int, default=1000, help="commands per step")
    workers_bench = bench_commands.add_parser("workers", help="forwarding hop, failover time")
    workers_bench.add_argument("--offers", type=int, default=50, help="each way")
    workers_bench.add_argument("--rounds", type=int, default=3, help="failovers")
    pages_bench = bench_commands.add_parser("pages", help="open pages: shared vs own follower")
    pages_bench.add_argument(
        "--pages", default="10,100,500", help="page counts to run, comma-separated"
    )
    pages_bench.add_argument("--events", type=int, default=200, help="events per run")
    return top


def run_bench(args: argparse.Namespace) -> int:
    try:
        match args.bench_command:
            case "media":
                from services.bench.media import options_from, run_media_bench

                asyncio.run(run_media_bench(options_from(args)))
                return 0
            case "audit":
                from services.bench.audit import run_audit_bench

                return asyncio.run(run_audit_bench(args.rooms, args.seconds, args.events))
            case "workers":
                from services.bench.workers import run_workers_bench

                return asyncio.run(run_workers_bench(args.offers, args.rounds))
            case "fairness":
                from services.bench.fairness import run_fairness_bench

                return asyncio.run(run_fairness_bench(args.commands, args.per_s))
            case "rooms":
                from services.bench.rooms import run_rooms_bench

                room_counts = [int(n) for n in args.rooms.split(",") if n.strip()]
                return asyncio.run(run_rooms_bench(room_counts, args.publishing, args.samples))
            case "pages":
                from services.bench.pages import run_pages_bench

                page_counts = [int(n) for n in args.pages.split(",") if n.strip()]
                return asyncio.run(run_pages_bench(page_counts, args.events))
            case _:
                from services.bench.store import run_store_bench

                return asyncio.run(
                    run_store_bench(args.seconds, args.recovery_events, args.appendfsync)
                )
    except ModuleNotFoundError as exc:
        if exc.name not in ("numpy", "httpx"):
            raise
        print(f"earpiece bench needs {exc.name}: pip install 'earpiece[bench]'", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    logs.configure(settings.log_format, verbose=args.verbose)
    try:
        return run(args, settings)
    except EarpieceError as exc:  # what the user can act on: one line, no traceback
        print(f"earpiece {args.command}: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, settings: Settings) -> int:
    match args.command:
        case "serve" if args.workers > 1:
            from services.worker_pool import serve_workers

            asyncio.run(serve_workers(settings, args.workers))
            return 0
        case "serve":
            asyncio.run(serve(settings))
            return 0
        case "token":
            subject = args.sub or f"{args.role}-1"
            print(
                mint_token(
                    settings.signing_secret(),
                    subject=subject,
                    name=args.name or subject,
                    room=args.room,
                    role=Role(args.role),
                    whisper=args.whisper,
                    queue=args.queue,
                    queues=tuple(q.strip() for q in args.queues.split(",") if q.strip()),
                    audience=settings.jwt_audience,
                    issuer=settings.jwt_issuer,
                    ttl_s=args.ttl,
                )
            )
            return 0
        case "audit" if args.audit_command == "verify":
            return asyncio.run(audit_verify(settings, check_room_id(args.room)))
        case "audit":
            room_id = check_room_id(args.room)
            return asyncio.run(audit_replay(settings, room_id, args.version, args.time))
        case "schema":
            print(json.dumps(envelope_json_schema(), indent=2))
            return 0
        case "bench":
            return run_bench(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
