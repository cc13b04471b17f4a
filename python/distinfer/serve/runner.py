"""`distinfer serve`: deploy the Serve app onto a given Ray, or onto a private local one, and block.

Stops only what it started: the application it deployed, and the local Ray when it started one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
from collections.abc import Iterator

from distinfer.config import ModelsFile, app_args, cpus_reserved
from distinfer.serve.local_ray import LocalRay, env_vars, free_ports
from distinfer.serve.settings import resolve_api_key

log = logging.getLogger(__name__)


@contextlib.contextmanager
def connected_ray(
    ray_address: str | None,
    num_cpus: int | None = None,
    haproxy: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[LocalRay | None]:
    """A driver connection to the given Ray, or to a private local Ray started (and stopped) here
    (`haproxy`: with Serve's direct ingress behind HAProxy, local_ray.haproxy_env; `extra_env`: its
    processes' environment on top of this one's)."""
    local = None if ray_address else LocalRay.start(num_cpus=num_cpus, haproxy=haproxy, extra_env=extra_env)
    try:
        with env_vars(local.env if local else {}):
            import ray  # after the auth env is set: ray reads the token mode when it loads

            ray.init(
                address=local.address if local else ray_address,
                _node_ip_address="127.0.0.1" if local else None,
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
            try:
                yield local
            finally:
                ray.shutdown()
    finally:
        if local:
            local.stop()


@contextlib.contextmanager
def serve_on_private_ray(
    num_cpus: int | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[LocalRay, int]]:
    """A private local Ray (connected_ray) with Serve's HTTP proxy on a free port of 127.0.0.1: yields
    the Ray and that port; Serve, the driver and that Ray stopped at the end (on failure too)."""
    with connected_ray(None, num_cpus=num_cpus, extra_env=extra_env) as local:
        assert local is not None  # no address given: always a private one
        from ray import serve

        (port,) = free_ports(1)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            yield local, port
        finally:
            serve.shutdown()


def deploy(models: ModelsFile, host: str, port: int, app_name: str) -> str:
    """Start Serve's proxies on host:port and deploy the app; returns its base URL once it answers."""
    from ray import serve

    from distinfer.serve.app import build_app

    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(app_args(models)), name=app_name, route_prefix="/", blocking=False)
    return base_url(host, port)


def base_url(host: str, port: int) -> str:
    """Where a client on this machine reaches a server listening on host:port."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def run_on_ray(
    models: ModelsFile,
    host: str,
    port: int,
    ray_address: str | None,
    app_name: str,
    haproxy: bool = False,
    edge: bool = False,
) -> None:
    """`edge` (on the private Ray only): the edge HAProxy (serve/edge.py) listens on host:port and
    sheds overload there; Serve itself listens on a private port of 127.0.0.1 behind it."""
    resolve_api_key(models)  # refuse to start before Ray comes up if the key is missing
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # Ray's CPUs are a reservation, not cores: a private Ray declares at least what the replicas reserve
    # (two CPU models of one CPU each and the router's 0.1 would not fit the 2 a 2-core host has).
    cpus = max(os.cpu_count() or 1, math.ceil(cpus_reserved(models)))
    with connected_ray(ray_address, num_cpus=cpus, haproxy=haproxy) as local:
        from ray import serve

        with contextlib.ExitStack() as front:
            if edge and local is not None:
                from distinfer.serve.edge import Edge, edge_files_dir, edge_limits
                from distinfer.serve.local_ray import free_ports

                (serve_port,) = free_ports(1)
                deploy(models, "127.0.0.1", serve_port, app_name)
                files = edge_files_dir(local.temp_dir)
                front.enter_context(
                    Edge.start(edge_limits(models), (host, port), ("127.0.0.1", serve_port), files)
                )
                url = base_url(host, port)
            else:
                url = deploy(models, host, port, app_name)
            log.info("serving %s at %s/v1 (Ctrl-C stops)", [m.name for m in models.models], url)
            try:
                stop.wait()
            finally:
                log.info("removing application %s", app_name)
                with contextlib.suppress(Exception):
                    serve.delete(app_name)
                if ray_address is None:
                    with contextlib.suppress(Exception):
                        serve.shutdown()
