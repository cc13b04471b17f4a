"""A text file served over HTTP as a Prometheus exporter would serve it (`/metrics`), for tests.

Used for what cannot run on this machine: a DCGM exporter (no GPU; `dcgm_exporter_sample.txt`) and, in
the role test, a stand-in for Ray's metrics export. Plain `http.server` in a thread on a free port of
127.0.0.1, stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus's text exposition format


@contextlib.contextmanager
def serving_text(text: str) -> Iterator[int]:
    """Serve `text` at every path; yields the port."""
    body = text.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
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
