"""A text file served over HTTP as a Prometheus exporter would serve it (`/metrics`), for tests.

Used for what cannot run on this machine: a DCGM exporter (no GPU; `dcgm_exporter_sample.txt`, its
energy counter advanced by its power readings as time passes) and, in the role test, a stand-in for
Ray's metrics export. Plain `http.server` in a thread on a free port of
127.0.0.1, stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus's text exposition format


@contextlib.contextmanager
def serving(render: Callable[[], str]) -> Iterator[int]:
    """Serve what `render()` returns at every path, rendered per request; yields the port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
POWER = "DCGM_FI_DEV_POWER_USAGE"
_SAMPLE = re.compile(r"^(?P<name>\w+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def dcgm_replay(sample: str, started: float, now: float) -> str:
    """The DCGM sample as the exporter would show it `now - started` seconds later: each GPU's energy
    counter (mJ) advanced by its power reading (W) over that time; every other line as recorded."""
    power = {
        m["labels"]: float(m["value"])
        for m in map(_SAMPLE.match, sample.splitlines())
        if m and m["name"] == POWER
    }
    out = []
    for line in sample.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == ENERGY:
            advanced = float(match["value"]) + power[match["labels"]] * (now - started) * 1000.0
            line = f"{ENERGY}{{{match['labels']}}} {advanced:.0f}"
        out.append(line)
    return "\n".join(out) + "\n"


@contextlib.contextmanager
def serving_dcgm(sample: str) -> Iterator[int]:
    """A DCGM exporter's sample served as the exporter would serve it over time (see dcgm_replay)."""
    started = time.time()
    with serving(lambda: dcgm_replay(sample, started, time.time())) as port:
        yield port


@contextlib.contextmanager
def serving_text(text: str) -> Iterator[int]:
    """Serve `text` at every path; yields the port."""
    with serving(lambda: text) as port:
        yield port
