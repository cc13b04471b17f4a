"""`StatusWatcher`: the server's `GET /status` (every model's replicas as Ray Serve sees them), asked
once a second into the scenario's `status.jsonl` from the runner process (the load workers do not pay
for it). A poll that gets no answer is written as such; results/availability.py reads the lines back
into the scenario's fault course.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from pydantic import BaseModel

from distinfer.results.availability import STATUS_FILE, StatusLine

POLL_INTERVAL_S = 1.0
POLL_TIMEOUT_S = 2.0


class Poller(threading.Thread):
    """Asks something once an interval until stopped: one JSON line per answer in `path`, flushed as
    written (a crash loses nothing). Subclasses say how to ask (`_poll`, None: nothing to write) and
    when to give up (`_last`)."""

    def __init__(self, name: str, path: Path, interval_s: float) -> None:
        super().__init__(name=name, daemon=True)
        self.path = path
        self.interval_s = interval_s
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=POLL_TIMEOUT_S + self.interval_s + 1)

    def run(self) -> None:
        with self.path.open("a") as out, httpx.Client(timeout=POLL_TIMEOUT_S) as client:
            while not self._stop_event.is_set():
                line = self._poll(client)
                if line is not None:
                    out.write(line.model_dump_json(exclude_none=True) + "\n")
                    out.flush()
                if self._last(line):
                    return
                self._stop_event.wait(self.interval_s)

    def _poll(self, client: httpx.Client) -> BaseModel | None:
        raise NotImplementedError

    def _last(self, line: BaseModel | None) -> bool:
        return False


class StatusWatcher(Poller):
    """Samples `<url>/status` until stopped; one JSON line per poll, flushed as written."""

    def __init__(self, url: str, out: Path, api_key: str | None, interval_s: float = POLL_INTERVAL_S) -> None:
        super().__init__("status-watcher", out / STATUS_FILE, interval_s)
        self.url = url.rstrip("/") + "/status"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _last(self, line: BaseModel | None) -> bool:
        # A server without /status (an older one, another stack): nothing to watch.
        return isinstance(line, StatusLine) and bool(line.absent)

    def _poll(self, client: httpx.Client) -> StatusLine:
        asked = time.time()
        try:
            response = client.get(self.url, headers=self.headers)
        except httpx.HTTPError as err:
            return StatusLine(time=asked, ok=False, error=f"{type(err).__name__}: {err}"[:300])
        if response.status_code == 404:
            return StatusLine(time=asked, ok=False, absent=True, error="the server has no /status")
        if response.status_code != 200:
            return StatusLine(
                time=asked, ok=False, error=f"HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            return StatusLine(time=asked, ok=True, models=response.json()["models"])
        except (ValueError, KeyError) as err:
            return StatusLine(time=asked, ok=False, error=f"unreadable status: {err}")
