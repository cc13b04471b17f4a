"""CPU time of the serving path's processes on this node, by part, between two samples.

Ray names each actor's process after it (`ray::ProxyActor`, `ray::ServeReplica:<app>:<deployment>`),
so the parts are told apart by process title:
- `proxy`: Ray Serve's HTTP proxies and HAProxy (the direct-ingress front), whatever takes the
  client's connection first;
- `ingress`: the `OpenAIIngress` replicas of the router layout (they pick the model's replicas);
- `replicas`: the model replicas (`model-<name>`), which run the engine, and in the direct layout
  also answer HTTP themselves.
Every other process (Ray's own daemons, the load generator, the recorder) is left out: the node's
whole CPU figure is beside this one in each sample.

Each sample carries the CPU seconds (user + system) each part used since the previous sample; a
process that appeared in between counts from its start, one that ended counts up to the last sample
that saw it.
"""

from __future__ import annotations

import psutil

INGRESS_DEPLOYMENT = "OpenAIIngress"  # distinfer.config.INGRESS_DEPLOYMENT (this module runs alone)
PARTS = ("proxy", "ingress", "replicas")


def part_of(cmdline: list[str], name: str) -> str | None:
    """Which part of the serving path a process is, from its title and name (None: not one)."""
    title = cmdline[0] if cmdline else ""
    if title.startswith("ray::ProxyActor") or name == "haproxy":
        return "proxy"
    if title.startswith("ray::ServeReplica:"):
        deployment = title.split()[0].rsplit(":", 1)[-1]
        return "ingress" if deployment == INGRESS_DEPLOYMENT else "replicas"
    return None


class ServingCpu:
    """CPU seconds per part of the serving path between calls of `take`."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[psutil.Process, str | None, bool]] = {}
        self._last: dict[int, float] = {}

    def _scan(self) -> None:
        """Learn the processes started (or retitled) since the last scan; forget those gone."""
        pids = set(psutil.pids())
        for pid in set(self._known) - pids:
            del self._known[pid]
            self._last.pop(pid, None)
        for pid in pids:
            known = self._known.get(pid)
            # Ray starts workers idle (`ray::IDLE`) and retitles one when it becomes an actor: an idle
            # worker is looked at again on every scan (Ray's daemons keep their titles).
            if known is not None and (known[1] is not None or not known[2]):
                continue
            try:
                proc = known[0] if known is not None else psutil.Process(pid)
                cmdline = proc.cmdline()
                part = part_of(cmdline, proc.name())
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            self._known[pid] = (proc, part, bool(cmdline) and cmdline[0].startswith("ray::IDLE"))

    def prime(self) -> None:
        """Start counting from now (processes running now count from here, not from their start)."""
        self._scan()
        self.take()

    def take(self) -> dict[str, float]:
        self._scan()
        used = dict.fromkeys(PARTS, 0.0)
        for pid, (proc, part, _) in list(self._known.items()):
            if part is None:
                continue
            try:
                times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            total = times.user + times.system
            used[part] += max(0.0, total - self._last.get(pid, 0.0))
            self._last[pid] = total
        return used
