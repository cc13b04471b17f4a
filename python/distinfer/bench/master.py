"""The Locust master of a scenario run from load hosts (results/loadgen.py tells the whole flow).

Run as `python -m distinfer.bench.master MASTER.json` by `runner` on the control machine. It loads
Locust (gevent's monkey-patching first), binds Locust's master port, and then:
1. waits until every load host's worker processes have connected (each says its host and how many
   processes its host runs: `distinfer_hello`);
2. sends each worker its share (a `WorkerPlan`: its index among all workers, the open-loop rate and
   in-flight cap shares) and waits until every one has made its prompts and schedules
   (`distinfer_ready`);
3. has Locust's own dispatcher spread the users over the workers (`MasterRunner.start`), then sends
   every worker one start message (`distinfer_start`: the seconds until the start, and its users'
   places in the ramp); each worker starts on its own clock;
4. watches: a worker Locust marks missing (no heartbeat for ~3 s) is a lost host; a worker that says
   `distinfer_done` has drained and written its records; when every worker is done or lost, it
   tells the workers to quit and writes `loadgen.json`.
The master sends no request and takes no time a metric uses.
"""

# isort: off
import locust  # noqa: F401  (first: gevent's monkey-patching must precede everything else)

# isort: on
import json
import logging
import socket
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner

from distinfer.bench.runner import split
from distinfer.bench.worker import user_class_for
from distinfer.results.loadgen import HostLoss, LoadgenRun, WorkerEntry, interleave
from distinfer.results.scenario import ScenarioSpec, WorkerPlan

log = logging.getLogger("distinfer.bench.master")

START_DELAY_S = 1.5  # from the start message to the load's start: time for it to reach every host
READY_TIMEOUT_S = 120.0  # a worker's prompts and schedules (a long trace synthesises many)
LOST_GRACE_S = 30.0  # past the drain deadline, a worker that has not said done is lost


class Master:
    def __init__(self, spec: ScenarioSpec, hosts: list[str], port: int, connect_timeout_s: float) -> None:
        self.spec = spec
        self.hosts = hosts
        self.connect_timeout_s = connect_timeout_s
        self.env = Environment(user_classes=[user_class_for(spec)], host=spec.url)
        self.runner: MasterRunner = self.env.create_master_runner("*", port)
        self.hello: dict[str, dict[str, Any]] = {}
        self.ready: set[str] = set()
        self.entries: dict[str, WorkerEntry] = {}
        self.losses: list[HostLoss] = []
        self.lost: set[str] = set()
        self.started: float | None = None
        for kind, handler in (
            ("distinfer_hello", self._on_hello),
            ("distinfer_ready", self._on_ready),
            ("distinfer_done", self._on_done),
        ):
            self.runner.register_message(kind, handler)
        self.env.events.worker_report.add_listener(self._on_report)

    # -- messages from the workers (handled in Locust's listener greenlet) --------------------------
    def _on_hello(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.hello[msg.node_id] = dict(msg.data)

    def _on_ready(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.ready.add(msg.node_id)

    def _on_done(self, environment: Environment, msg: Any, **_: Any) -> None:
        entry = self.entries.get(msg.node_id)
        if entry is not None:
            entry.done = True
            entry.requests_reported = int(msg.data.get("requests", entry.requests_reported))
            entry.reported_at = time.time()

    def _on_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        ours = data.get("distinfer")
        entry = self.entries.get(client_id)
        if entry is not None and isinstance(ours, dict):
            entry.requests_reported = int(ours.get("requests", 0))
            entry.reported_at = time.time()

    # -- the steps ----------------------------------------------------------------------------------
    def connected(self) -> list[tuple[str, dict[str, Any]]]:
        """Every worker of every host once all have said hello, in host order then process; else []."""
        by_host: dict[str, list[tuple[str, dict[str, Any]]]] = {h: [] for h in self.hosts}
        for client_id, hello in self.hello.items():
            if hello.get("host") in by_host and client_id in self.runner.clients:
                by_host[hello["host"]].append((client_id, hello))
        if any(not ws or len(ws) < int(ws[0][1]["processes"]) for ws in by_host.values()):
            return []
        return [w for h in self.hosts for w in sorted(by_host[h], key=lambda w: int(w[1]["process"]))]

    def wait_connected(self) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.time() + self.connect_timeout_s
        while time.time() < deadline:
            workers = self.connected()
            if workers:
                return workers
            gevent.sleep(0.2)
        seen = sorted({str(h.get("host")) for h in self.hello.values()})
        missing = [h for h in self.hosts if h not in seen]
        raise LoadgenStartError(
            f"load host(s) {', '.join(missing) or '(all connected, but not all their processes)'} did not "
            f"connect to the Locust master within {self.connect_timeout_s:.0f} s (connected: "
            f"{', '.join(seen) or 'none'}). Check each load host's agent log (journalctl -u "
            "distinfer-loadgen) and that it reaches this machine on the master's port (a firewall?)"
        )

    def assign(self, workers: list[tuple[str, dict[str, Any]]]) -> None:
        spec, count = self.spec, len(workers)
        caps = split(spec.users, count)
        for index, (client_id, hello) in enumerate(workers):
            plan = WorkerPlan(
                index=index,
                scenario=spec,
                users=caps[index],
                workers=count,
                rate=None if spec.rate is None else spec.rate / count,
                records=str(hello["records"]),
                stats=str(hello["stats"]),
                load_host=str(hello["host"]),
            )
            self.entries[client_id] = WorkerEntry(
                client_id=client_id,
                host=str(hello["host"]),
                process=int(hello["process"]),
                index=index,
                pid=int(hello["pid"]),
                users=0,
                cap=caps[index],
                rate=plan.rate,
            )
            self.runner.send_message("distinfer_plan", plan.model_dump(mode="json"), client_id)
        deadline = time.time() + READY_TIMEOUT_S
        while not set(self.entries) <= self.ready:
            if time.time() > deadline:
                late = sorted({self.entries[c].host for c in set(self.entries) - self.ready})
                raise LoadgenStartError(f"load host(s) {', '.join(late)} did not get ready in time")
            gevent.sleep(0.1)

    def start(self) -> float:
        """Locust deals the users; then one start message to every worker, with its users' places."""
        spec = self.spec
        closed = not (spec.open_loop or spec.trace is not None or spec.sessions is not None)
        users = spec.users if closed else len(self.entries)
        self.runner.start(users, spawn_rate=max(users, 1))  # returns once the workers have spawned
        order = sorted(self.entries.values(), key=lambda e: e.index)
        for entry in order:
            client = self.runner.clients.get(entry.client_id)
            entry.users = sum(client.user_classes_count.values()) if client is not None else 0
        places = interleave([e.users for e in order]) if closed else [[] for _ in order]
        start = time.time() + START_DELAY_S
        for entry, positions in zip(order, places, strict=True):
            data = {"delay_s": start - time.time(), "positions": positions}
            self.runner.send_message("distinfer_start", data, entry.client_id)
        self.started = start
        log.warning(
            "load started on %s: %s",
            ", ".join(self.hosts),
            "; ".join(f"{e.host} p{e.process}: {e.users} user(s)" for e in order),
        )
        return start

    def watch(self) -> None:
        assert self.started is not None
        spec = self.spec
        hard_end = self.started + spec.duration_s + spec.drain_timeout_s + LOST_GRACE_S
        while True:
            gevent.sleep(0.5)
            now = time.time()
            for entry in self.entries.values():
                if entry.done or entry.host in self.lost:
                    continue
                client = self.runner.clients.get(entry.client_id)
                if client is None or client.state == STATE_MISSING:
                    self.lose(entry.host, "missed Locust heartbeats (the host or its workers went away)", now)
            pending = [e for e in self.entries.values() if not e.done and e.host not in self.lost]
            if not pending:
                return
            if now > hard_end:
                for host in sorted({e.host for e in pending}):
                    self.lose(host, "never said its load was done (past the drain deadline)", now)
                return

    def lose(self, host: str, how: str, at: float) -> None:
        """Record a load host gone: every worker of it counts as lost, with what it had."""
        if host in self.lost:
            return
        self.lost.add(host)
        assert self.started is not None
        mine = [e for e in self.entries.values() if e.host == host]
        loss = HostLoss(
            host=host,
            at=at,
            after_s=at - self.started,
            how=how,
            workers=len(mine),
            users=sum(e.users for e in mine),
            requests_reported=sum(e.requests_reported for e in mine),
        )
        self.losses.append(loss)
        log.warning(
            "LOST load host %s %.1f s into the load: %s; it had %d worker(s), %d user(s), at least %d "
            "request(s) sent",
            host,
            loss.after_s,
            how,
            loss.workers,
            loss.users,
            loss.requests_reported,
        )

    def account(self, error: str | None = None) -> LoadgenRun:
        return LoadgenRun(
            master=socket.gethostname(),
            hosts=self.hosts,
            started=self.started,
            workers=sorted(self.entries.values(), key=lambda e: e.index),
            losses=self.losses,
            error=error,
        )


class LoadgenStartError(RuntimeError):
    """The load could not start on the load hosts (the message says which and what to check)."""


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    config = json.loads(Path(sys.argv[1]).read_text())
    spec = ScenarioSpec.model_validate(config["scenario"])
    out = Path(config["out"])
    master = Master(spec, list(config["hosts"]), int(config["port"]), float(config["connect_timeout_s"]))
    try:
        master.assign(master.wait_connected())
        master.start()
        master.watch()
    except LoadgenStartError as err:
        master.account(str(err)).save_file(out)
        master.runner.quit()
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    master.runner.quit()
    master.account().save_file(out)


if __name__ == "__main__":
    main()
