"""`placement.json`: where a scenario's replicas ran, read from Ray before its load.

The plan pins a scenario's replicas to the inventory hosts it names (`nodes:`; a Ray label selector
on each node's `distinfer.io/host` label, config.pin_to_hosts). Before the load the benchmark reads
Ray's own view (`distinfer bench placement`, which the loadtest role feeds): Serve's running replicas
of the scenario's deployment (the dashboard's `/api/serve/applications/`), then from Ray's state API
the node each replica actor runs on (`/api/v0/actors`), the nodes of its placement group's bundles
(`/api/v0/placement_groups`, tensor parallelism) and each node's host label (`/api/v0/nodes`). A
replica on a host the scenario does not name fails the scenario; the hosts that served are the
report's node rows. `schema_version` 1 is the only layout so far.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from distinfer.results.base import ResultsFile, Strict

PLACEMENT_FILE = "placement.json"
SCHEMA_VERSION = 1
# What `placement_from_state` reads: the dashboard's paths (Serve's REST API, Ray's state API as `ray list
# ... --detail` asks it), by the key each answer takes in its `state`. The roles ask these (the plan's
# `ray_state_paths`): the local platform from the head's dashboard, the RayService in its head pod.
_ALIVE = "filter_keys=state&filter_predicates=%3D&filter_values=ALIVE"
STATE_PATHS = {
    "serve": "/api/serve/applications/",
    "nodes": f"/api/v0/nodes?limit=10000&{_ALIVE}",
    "actors": f"/api/v0/actors?limit=10000&detail=true&{_ALIVE}",
    "placement_groups": (
        "/api/v0/placement_groups?limit=10000&detail=true&filter_keys=state&filter_predicates=%3D"
        "&filter_values=CREATED"
    ),
}


class ReplicaPlacement(Strict):
    """One running replica and the hosts holding it."""

    replica_id: str
    actor_id: str | None = Field(description="The replica actor (Ray's actor id, hex).")
    node_id: str | None = Field(description="The Ray node its actor runs on.")
    node_ip: str | None
    host: str | None = Field(description="That node's host label; None when the node has none.")
    bundle_hosts: list[str | None] = Field(
        default_factory=list,
        description="The host label of each bundle's node of its placement group (tensor parallelism); "
        "empty for a replica that is one actor.",
    )

    @property
    def hosts(self) -> list[str | None]:
        """Every host holding a part of it (the actor's, then its bundles'), each once."""
        return list(dict.fromkeys([self.host, *self.bundle_hosts]))


class Placement(ResultsFile):
    """SCENARIO/placement.json: the scenario's running replicas, each with its hosts."""

    DEFAULT_FILE: ClassVar[str] = PLACEMENT_FILE
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (SCHEMA_VERSION,)

    schema_version: int = SCHEMA_VERSION
    checked_at: float = Field(description="When Ray was asked (Unix time).")
    app: str
    deployment: str = Field(description="The Serve deployment of the scenario's model.")
    label: str = Field(description="The node label naming the inventory host (distinfer.io/host).")
    named: list[str] = Field(description="The hosts the scenario names; empty: anywhere.")
    replicas: list[ReplicaPlacement]
    served: list[str] = Field(description="The hosts holding a replica or a part of one, named ones first.")
    unlabelled: list[str] = Field(
        default_factory=list, description="Nodes (by address) holding a replica but carrying no host label."
    )
    outside: list[str] = Field(
        default_factory=list, description="One line per replica not on a named host (when some are named)."
    )

    @property
    def ok(self) -> bool:
        """Some replica runs, and every one is on the named hosts (any host when none are named)."""
        return bool(self.replicas) and not self.outside

    @property
    def unused(self) -> list[str]:
        """Named hosts holding none of the replicas (Ray may pack them on fewer)."""
        return [h for h in self.named if h not in self.served]

    def line(self) -> str:
        """One sentence: how many replicas, on which hosts, against the named ones."""
        named = f"named: {', '.join(self.named)}" if self.named else "no hosts named"
        where = ", ".join(self.served) or "no host"
        if self.unlabelled:
            where += f" and unlabelled node(s) {', '.join(self.unlabelled)}"
        text = f"{len(self.replicas)} replica(s) of {self.deployment} on {where} ({named})"
        if self.unused:
            text += f"; {', '.join(self.unused)} named but holding none"
        return text


class RayStateError(ValueError):
    """The Ray answers given do not say where the replicas are."""


def state_rows(answer: Any, what: str) -> list[Mapping[str, Any]]:
    """The rows of one state API answer (`GET /api/v0/<resource>`, what `ray list` prints)."""
    if not isinstance(answer, Mapping):
        raise RayStateError(f"Ray's state API answer for {what} is not a JSON object")
    if answer.get("result") is False:
        raise RayStateError(
            f"Ray's state API refused the {what} query: {answer.get('msg') or 'no reason given'}"
        )
    try:
        rows = answer["data"]["result"]["result"]
    except (KeyError, TypeError):
        raise RayStateError(f"Ray's state API answer for {what} has no data.result.result") from None
    if not isinstance(rows, list):
        raise RayStateError(f"Ray's state API answer for {what}: data.result.result is not a list")
    return [row for row in rows if isinstance(row, Mapping)]


def running_replicas(serve: Any, app: str, deployment: str) -> list[Mapping[str, Any]]:
    """Serve's RUNNING replicas of `deployment` (`GET /api/serve/applications/`)."""
    apps = serve.get("applications") if isinstance(serve, Mapping) else None
    if not isinstance(apps, Mapping) or app not in apps:
        known = ", ".join(apps) if isinstance(apps, Mapping) and apps else "none"
        raise RayStateError(f"Serve runs no application {app!r} (applications: {known})")
    deployments = apps[app].get("deployments") or {}
    if deployment not in deployments:
        raise RayStateError(
            f"Serve's application {app!r} has no deployment {deployment!r} "
            f"(deployments: {', '.join(deployments) or 'none'})"
        )
    replicas = deployments[deployment].get("replicas") or []
    return [r for r in replicas if isinstance(r, Mapping) and r.get("state") == "RUNNING"]


def placement_from_state(
    state: Mapping[str, Any],
    app: str,
    deployment: str,
    named: list[str],
    label: str,
    now: float | None = None,
) -> Placement:
    """Where `deployment`'s running replicas are, from Ray's answers in `state` (keys `serve`, `nodes`,
    `actors`, `placement_groups`: the dashboard's answers as they came), judged against `named`."""
    nodes = {str(n.get("node_id")): n for n in state_rows(state.get("nodes"), "nodes")}
    actors = {str(a.get("actor_id")): a for a in state_rows(state.get("actors"), "actors")}
    groups = {
        str(g.get("placement_group_id")): g
        for g in state_rows(state.get("placement_groups"), "placement groups")
    }

    def host_of(node_id: Any) -> str | None:
        node = nodes.get(str(node_id)) or {}
        value = (node.get("labels") or {}).get(label)
        return str(value) if value else None

    replicas = []
    unlabelled: list[str] = []
    for replica in running_replicas(state.get("serve"), app, deployment):
        actor_id = replica.get("actor_id")
        actor = actors.get(str(actor_id)) or {}
        node_id = actor.get("node_id") or replica.get("node_id")
        node_ip = (nodes.get(str(node_id)) or {}).get("node_ip") or replica.get("node_ip")
        group = groups.get(str(actor.get("placement_group_id"))) or {}
        bundle_nodes = [b.get("node_id") for b in group.get("bundles") or [] if isinstance(b, Mapping)]
        placed = ReplicaPlacement(
            replica_id=str(replica.get("replica_id")),
            actor_id=str(actor_id) if actor_id else None,
            node_id=str(node_id) if node_id else None,
            node_ip=str(node_ip) if node_ip else None,
            host=host_of(node_id),
            bundle_hosts=[host_of(n) for n in bundle_nodes],
        )
        replicas.append(placed)
        for each in [node_id, *bundle_nodes]:
            if host_of(each) is None:
                address = str((nodes.get(str(each)) or {}).get("node_ip") or each)
                unlabelled += [address] if address not in unlabelled else []
    found = [h for r in replicas for h in r.hosts if h is not None]
    served = [h for h in named if h in found] + [h for h in dict.fromkeys(found) if h not in named]
    outside = []
    if named:
        for r in replicas:
            for host in r.hosts:
                if host is None:
                    outside.append(
                        f"replica {r.replica_id} runs on a node without the {label} label "
                        f"({r.node_ip or r.node_id}), not on {', '.join(named)}"
                    )
                elif host not in named:
                    part = "its actor" if host == r.host else "a bundle of its placement group"
                    outside.append(
                        f"replica {r.replica_id} ({part}) runs on {host}, not one of {', '.join(named)}"
                    )
    return Placement(
        checked_at=time.time() if now is None else now,
        app=app,
        deployment=deployment,
        label=label,
        named=list(named),
        replicas=replicas,
        served=served,
        unlabelled=unlabelled,
        outside=outside,
    )
