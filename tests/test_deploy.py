"""deploy/ validates offline: the compose file with Debian's docker-compose (no daemon needed),
the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import kubernetes_validate
import yaml

from tests.support import REPO

DEPLOY = REPO / "deploy"


def test_the_compose_file_validates_and_probes_liveness_only() -> None:
    env = {**os.environ, "EARPIECE_TURN_SECRET": "t", "EARPIECE_JWT_SECRET": "j"}
    checked = subprocess.run(
        ["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "config"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert checked.returncode == 0, checked.stderr
    services = yaml.safe_load(checked.stdout)["services"]
    workers = [name for name in services if name.startswith("worker-")]
    assert len(workers) == 2
    for name in workers:  # a restart for a Redis blip would drop its calls
        assert "/livez" in " ".join(services[name]["healthcheck"]["test"])
    ports = {services[name]["environment"]["EARPIECE_PORT"] for name in workers}
    assert len(ports) == 2


def manifests() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def test_the_kubernetes_manifests_validate_against_the_schemas() -> None:
    version = kubernetes_validate.latest_version()
    for manifest in manifests():
        kubernetes_validate.validate(manifest, version, strict=True)  # raises if not


def test_the_workers_are_ready_with_redis_and_alive_without_it() -> None:
    [deployment] = [m for m in manifests() if m["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]

    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"]
