"""`ReplicaWatcher`: a deployment's replicas (RUNNING, STARTING, and Serve's target) asked once a second
from Ray Serve's REST API on the Ray dashboard (`GET /api/serve/applications/`, what `serve status`
calls), written to the scenario's `replicas.jsonl` as it goes, from the runner process.

Ray's token auth: the dashboard wants `Authorization: Bearer <token>`, read from the token file every Ray
process of the cluster reads (RAY_AUTH_TOKEN_PATH; the ray_local role's `auth_token`). A poll that gets
no answer, or finds no such deployment, is logged once and written as nothing: the samples' gap shows it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import httpx

from distinfer.bench.watcher import POLL_INTERVAL_S, Poller
from distinfer.results.autoscaling import REPLICAS_FILE, ReplicaSample

log = logging.getLogger(__name__)

SERVE_API_PATH = "/api/serve/applications/"


def replica_sample(details: dict[str, Any], deployment: str, app: str | None, asked: float) -> ReplicaSample:
    """The sample of `deployment` (in application `app`, or the first application that has it) in Serve's
    REST answer (ServeInstanceDetails: applications -> deployments -> target_num_replicas, replicas)."""
    apps = details.get("applications") or {}
    chosen = (
        [apps[app]] if app is not None and app in apps else [] if app is not None else list(apps.values())
    )
    for application in chosen:
        found = (application.get("deployments") or {}).get(deployment)
        if found is None:
            continue
        states = [str(replica.get("state", "")) for replica in found.get("replicas") or []]
        return ReplicaSample(
            t=asked,
            running=states.count("RUNNING"),
            starting=states.count("STARTING"),
            target=found.get("target_num_replicas"),
        )
    raise LookupError(
        f"no deployment {deployment!r} in {'application ' + repr(app) if app else 'any application'} "
        f"(applications: {sorted(apps)})"
    )


@dataclasses.dataclass(frozen=True)
class ReplicaSource:
    """Where a scenario's replicas are asked: the Ray dashboard, its token file, the Serve application."""

    dashboard: str
    token_file: Path | None = None
    app: str | None = None

    def cli_args(self) -> list[str]:
        """The same source as `distinfer bench run` options."""
        args = ["--serve-dashboard", self.dashboard]
        args += ["--ray-token-file", str(self.token_file)] if self.token_file is not None else []
        return args + (["--serve-app", self.app] if self.app is not None else [])

    def watcher(self, deployment: str, out: Path) -> ReplicaWatcher:
        return ReplicaWatcher(self.dashboard, deployment, out, self.app, self.token_file)


class ReplicaWatcher(Poller):
    """Samples one deployment's replicas until stopped; one JSON line per answered poll, flushed."""

    def __init__(
        self,
        dashboard: str,
        deployment: str,
        out: Path,
        app: str | None = None,
        token_file: Path | None = None,
        interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        super().__init__("replica-watcher", out / REPLICAS_FILE, interval_s)
        self.url = dashboard.rstrip("/") + SERVE_API_PATH
        self.deployment = deployment
        self.app = app
        token = token_file.read_text().strip() if token_file is not None else ""
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._said: set[str] = set()

    def _poll(self, client: httpx.Client) -> ReplicaSample | None:
        asked = time.time()
        try:
            response = client.get(self.url, headers=self.headers)
            response.raise_for_status()
            return replica_sample(response.json(), self.deployment, self.app, asked)
        except (httpx.HTTPError, ValueError, LookupError) as err:
            why = f"{type(err).__name__}: {err}"[:300]
            if why not in self._said:  # once per kind of failure, not once a second
                self._said.add(why)
                log.warning("replicas of %s not sampled from %s: %s", self.deployment, self.url, why)
            return None
