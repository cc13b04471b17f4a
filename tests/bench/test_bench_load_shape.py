"""How the load reaches the server: users ramp in evenly, and each keeps one connection alive.

Both were found by benchmarks/loadgen_fidelity.py: Locust starts every user in the same instant, so a
closed loop against fixed-length answers sent all its requests in bursts (TTFT +18 % at 256 users);
and a response not read past `[DONE]` made geventhttpclient close the connection, so every request
paid for a new one inside its TTFT.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import gevent
import pytest
from synthetic_server import DISTINFER, FINISHED, SyntheticServer

from distinfer.bench.stream import RequestSpec, StreamResult, make_client, stream_request
from distinfer.results.records import RequestRecord, load_records


def bench_run(
    url: str, model: str, out: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`distinfer bench run` against `url` into `out`, with `args` after."""
    cmd = [DISTINFER, "bench", "run", "--url", url, "--model", model, "--out", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def first_sends(server: SyntheticServer, out: Path, *args: str) -> list[float]:
    result = bench_run(server.url, server.model, out, *args)
    assert result.returncode in FINISHED, result.stderr
    first: dict[tuple[int, int], float] = {}
    for r in sorted(load_records(out / "records.jsonl"), key=lambda r: r.sent):
        first.setdefault((r.worker, r.user), r.sent)
    return sorted(first.values())


def _evenly_over_the_warmup(sends: list[float]) -> None:
    # 8 users over 2 workers, ramped over the 2 s warm-up: one first request every 0.25 s.
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert all(0.15 <= g <= 0.40 for g in gaps), gaps
    assert 1.5 <= sends[-1] - sends[0] <= 2.0


def _all_at_once(sends: list[float]) -> None:
    assert sends[-1] - sends[0] < 0.15


@pytest.mark.parametrize(
    ("args", "check"),
    [
        pytest.param(
            ["--workers", "2", "--duration", "4", "--warmup", "2"], _evenly_over_the_warmup,
            id="closed-loop-users-start-evenly-over-the-ramp",
        ),
        pytest.param(
            ["--duration", "3", "--warmup", "1", "--ramp", "0"], _all_at_once,
            id="ramp-zero-starts-every-user-at-once",
        ),
    ],
)  # fmt: skip
def test_how_closed_loop_users_start(server, tmp_path, args, check):
    sends = first_sends(server, tmp_path / "out", "--users", "8", *args, "--max-tokens", "4")
    assert len(sends) == 8
    check(sends)


def test_ramp_longer_than_the_run_is_refused_before_any_load(server, tmp_path):
    out = tmp_path / "bad"
    result = bench_run(
        server.url, server.model, out, "--users", "2", "--duration", "3", "--ramp", "5", timeout=60
    )
    assert result.returncode != 0
    assert "ramp" in result.stderr and "shorter than duration" in result.stderr
    assert not (out / "records.jsonl").exists()


class LateEndServer:
    """An HTTP/1.1 server that sends `data: [DONE]` and, 100 ms later, the chunked body's end, as a
    buffering proxy may; it counts the connections it accepts. Plain sockets on 127.0.0.1."""

    EVENT = (
        b'data: {"choices":[{"index":0,"text":"hi"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    )

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn:
            for _ in range(20):  # bounded: a test sends a handful of requests
                length = None
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if not line or length is None:
                    return
                reader.read(length)
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                conn.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
                for payload in (self.EVENT, b"data: [DONE]\n\n"):
                    conn.sendall(b"%x\r\n%s\r\n" % (len(payload), payload))
                time.sleep(0.1)
                conn.sendall(b"0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


def test_one_user_keeps_one_connection_when_the_body_ends_late():
    server = LateEndServer()
    url = f"http://127.0.0.1:{server.port}"
    spec = RequestSpec(url=url, model="m", api="completions", max_tokens=1, temperature=1.0, ignore_eos=True)
    client = make_client(spec, 1)
    try:
        for i in range(3):
            result = StreamResult()
            gevent.spawn(stream_request, client, spec, "keep me alive", result, f"late-{i}").get(timeout=30)
            assert result.done and result.completion_tokens == 1 and result.chunks == 1
    finally:
        client.close()
        server.close()
    assert server.accepted == 1, f"{server.accepted} connections for 3 requests of one user"


def test_a_request_ends_when_done_arrives_not_when_the_body_does(tmp_path):
    server = LateEndServer()
    out = tmp_path / "late"
    load = ["--users", "1", "--duration", "1", "--api", "completions", "--max-tokens", "1"]
    try:
        # --no-watch-status: this server counts connections; the status sampler would add some
        result = bench_run(f"http://127.0.0.1:{server.port}", "m", out, *load, "--no-watch-status")
    finally:
        server.close()
    # Exit 4 (INVALID) is expected: the user spends 100 ms of each ~110 ms waiting for the late body
    # end, so fewer than 95 % of the 1 user's time has a request in flight.
    assert result.returncode in (0, 4), result.stderr
    records = load_records(out / "records.jsonl")
    assert records and all(r.ok for r in records)
    # the body's end comes 100 ms after [DONE]; the request's end is [DONE]'s arrival
    assert all(r.end - r.last_token < 0.05 for r in records), [r.end - r.last_token for r in records]
    # and the next request waited for the body's end on the same connection (one connection for the
    # load, after the probe request's own)
    assert server.accepted == 2


def test_the_server_truth_counts_ttft_from_receipt(server, tmp_path):
    sends = first_sends(server, tmp_path / "truth", "--users", "2", "--duration", "2", "--max-tokens", "4")
    assert sends
    rows = [json.loads(line) for line in server.truth_log.read_text().splitlines()]
    assert rows
    for t in rows:
        # the model server received the request before the engine started on it
        assert t["received_unix"] <= t["arrival_unix"] <= t["first_token_unix"]
        assert t["arrival_unix"] - t["received_unix"] == pytest.approx(0.0, abs=0.5)


def _stepped(
    server: SyntheticServer, out: Path, spec: dict[str, object]
) -> tuple[float, list[RequestRecord]]:
    """`distinfer bench run --spec` of a stepped scenario: its load's start and its records."""
    path = out.parent / f"{out.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))
    result = bench_run(server.url, server.model, out, "--spec", str(path))
    assert result.returncode in FINISHED, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    return summary["started"], list(load_records(out / "records.jsonl"))


def test_closed_loop_steps_change_the_users_at_their_time(server, tmp_path):
    """Steps of 2 then 6 users (2 workers): before the step only two users send, after it all six,
    spread over both workers; the guard judges the concurrency against the steps' mean (valid)."""
    spec = {"steps": [{"at_s": 0, "users": 2}, {"at_s": 2, "users": 6}], "duration_s": 4, "max_tokens": 10}
    start, records = _stepped(server, tmp_path / "closed", {**spec, "workers": 2})
    before = {(r.worker, r.user) for r in records if r.sent - start < 1.9}
    after = {(r.worker, r.user) for r in records if r.sent - start > 2.3}
    assert len(before) == 2 and {w for w, _ in before} == {0, 1}, before
    assert len(after) == 6, after
    assert json.loads((tmp_path / "closed" / "summary.json").read_text())["valid"] is True


def test_open_loop_rate_steps_send_each_steps_rate(server, tmp_path):
    """Poisson at 10/s then 40/s (thinned from the peak): the sends of each half near its rate."""
    spec = {"steps": [{"at_s": 0, "rate": 10}, {"at_s": 2, "rate": 40}], "users": 64, "duration_s": 4}
    start, records = _stepped(server, tmp_path / "open", {**spec, "max_tokens": 4, "seed": 3})
    low = sum(1 for r in records if r.scheduled - start < 2)
    high = sum(1 for r in records if r.scheduled - start >= 2)
    # Expected 20 and 80 (Poisson sd ~4.5 and ~9): well inside, and the second clearly 4x the first.
    assert 8 <= low <= 34 and 55 <= high <= 110 and high > 2 * low, (low, high)
