"""The server's timing joined to every client record, and the TTFT split of the summary.

A real `distinfer bench run` against the project's real server (`distinfer serve --bare`, synthetic
engine: first token 20 ms after the engine starts a request). Checked: every record carries the
timing of its own request (the engine's truth log, joined by request id, has the same first token),
the five legs of each record add up to its TTFT, the legs' shares add up to the summary's TTFT median
within 1 ms (the issue's bound; by construction to rounding), the prefill leg is the engine's 20 ms,
and nothing is out of order on one machine's clock.
"""

from __future__ import annotations

import json
import socket

import pytest
from synthetic_server import DISTINFER, FINISHED, SyntheticServer

from distinfer.results.legs import moments_ms
from distinfer.results.records import load_records
from distinfer.results.summary import Summary


def test_every_record_carries_its_own_server_timing_and_the_legs_add_up(server: SyntheticServer, tmp_path):
    import subprocess

    out = tmp_path / "legs"
    cmd = [
        DISTINFER, "bench", "run", "--url", server.url, "--model", server.model, "--out", str(out),
        "--users", "8", "--duration", "5", "--warmup", "1", "--max-tokens", "8", "--api", "completions",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode in FINISHED, result.stderr
    records = [r for r in load_records(out / "records.jsonl") if r.ok]
    assert records and all(r.server is not None for r in records)

    truth = {t["request_id"]: t for t in map(json.loads, server.truth_log.read_text().splitlines())}
    for record in records:
        assert record.server is not None and record.server.first_token is not None
        # Joined to the right request: the engine's own record of this request id agrees.
        engine_first = truth[record.request_id]["first_token_unix"]
        assert record.server.first_token == pytest.approx(engine_first, abs=0.002)
        moments = moments_ms(record)
        assert moments is not None and moments[-1] == pytest.approx((record.first_token - record.sent) * 1000)
        assert moments == sorted(moments), moments  # one clock: in order
        assert record.server.ingress_host == record.server.replica_host == socket.gethostname()

    summary = Summary.model_validate_json((out / "summary.json").read_text())
    split = summary.ttft_split
    assert split is not None and split.requests == summary.metrics.completed and split.without_timing == 0
    assert split.ttft_ms == summary.metrics.ttft_ms  # the same population as the guide's TTFT
    assert summary.metrics.ttft_ms.p50 is not None
    shares = sum(leg.at_median_ms for leg in split.legs)
    assert abs(shares - summary.metrics.ttft_ms.p50) < 1.0  # the bound
    assert shares == pytest.approx(summary.metrics.ttft_ms.p50, abs=1e-6)  # what the construction gives
    legs = {leg.key: leg for leg in split.legs}
    assert list(legs) == [
        "send_to_ingress",
        "ingress_to_replica",
        "engine_queue",
        "prefill",
        "first_token_to_client",
    ]
    assert legs["prefill"].own_ms.p50 == pytest.approx(20.0, abs=3.0)  # the engine's configured TTFT
    assert split.out_of_order == 0 and split.one_clock and split.clock_offset_ms is None
