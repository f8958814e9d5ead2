"""A real Redis Cluster on loopback for the tests: three masters, each with a replica, made
with Debian's ``redis-server`` and ``redis-cli --cluster create``."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from services.redis_server import RedisServer, free_loopback_port


def _cluster_options() -> tuple[str, ...]:
    # The bus port is the client port + 10000 unless told: past 65535 for most free ports.
    bus_port = str(free_loopback_port())
    return (
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        bus_port,
        "--cluster-node-timeout",
        "2000",
    )


def _up(node: redis.Redis) -> bool:
    """The cluster is ok as this node sees it, and if it is a replica, it has synced: else its
    master's death would leave its slots without anyone to take them."""
    if node.cluster("info")["cluster_state"] != "ok":
        return False
    replication = node.info("replication")
    return replication["role"] == "master" or replication.get("master_link_status") == "up"


class RedisClusterServers:
    """``masters`` masters and as many replicas, each a ``redis-server`` of ours."""

    def __init__(self, data_dir: Path, *, masters: int = 3, binary: Path | None = None) -> None:
        self.servers = [
            RedisServer(data_dir / f"node-{n}", binary=binary, options=_cluster_options())
            for n in range(2 * masters)
        ]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def start(self) -> None:
        for server in self.servers:
            server.start()
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli (Debian's redis-tools) is needed for a cluster"
        nodes = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self._wait_until_ok()

    def _wait_until_ok(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        for server in self.servers:
            client = redis.Redis(port=server.port)
            try:
                while not _up(client):
                    assert time.monotonic() < deadline, "the cluster did not come up"
                    time.sleep(0.1)
            finally:
                client.close()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
