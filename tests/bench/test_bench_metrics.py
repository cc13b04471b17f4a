"""Metric math on constructed records: exact percentiles, the steady window, TPOT, throughput, goodput."""

from __future__ import annotations

import numpy as np
import pytest

from distinfer.results.guard import ClientLoad, check
from distinfer.results.metrics import compute_metrics, distribution, tpot_ms
from distinfer.results.records import RecordWriter, RequestRecord, load_records
from distinfer.results.slo import PRESETS, Slo, parse_slo


def rec(sent: float, ttft: float, last: float, end: float, tokens: int = 11, **kw) -> RequestRecord:
    data = dict(
        request_id=f"r{sent}",
        worker=0,
        seq=0,
        user=0,
        scheduled=sent,
        sent=sent,
        first_byte=sent + ttft,
        first_token=sent + ttft,
        last_token=sent + last,
        end=sent + end,
        status=200,
        ok=True,
        prompt_tokens=20,
        completion_tokens=tokens,
        max_tokens=tokens,
        chunks=tokens,
    )
    data.update(kw)
    return RequestRecord(**data)


def test_percentiles_are_exact_not_histogram_rounded():
    values = [101.0, 113.0, 127.0, 149.0, 1234.5, 2345.6, 3456.7, 4567.8, 5678.9, 6789.1]
    dist = distribution(values)
    assert dist.p50 == pytest.approx(np.percentile(values, 50))
    assert dist.p99 == pytest.approx(np.percentile(values, 99))
    # Locust would report 1234.5 as 1200 and 113 as 110: ours keeps every digit
    assert distribution([1234.5]).p95 == 1234.5
    assert distribution([]).count == 0 and distribution([]).p50 is None


def test_tpot_is_spread_over_tokens_after_the_first():
    r = rec(sent=0.0, ttft=0.5, last=1.5, end=1.6, tokens=11)
    assert tpot_ms(r) == pytest.approx(100.0)  # (1.5 - 0.5) s / 10 gaps
    assert tpot_ms(rec(0.0, 0.5, 0.5, 0.6, tokens=1)) is None


def test_window_excludes_warmup_and_drain_and_counts_throughput_inside():
    warm = rec(sent=0.5, ttft=0.1, last=1.1, end=1.2)  # scheduled in warm-up
    steady = [rec(sent=2.0 + i, ttft=0.2, last=1.2, end=1.3) for i in range(5)]  # sent 2..6
    drain = rec(sent=10.5, ttft=0.1, last=1.1, end=1.2)  # after the window
    m = compute_metrics([warm, *steady, drain], window_start=2.0, window_end=10.0, max_tokens=11)
    assert m.requests_scheduled == 5 and m.completed == 5 and m.failed == 0
    assert m.ttft_ms.p50 == pytest.approx(200.0)
    assert m.tpot_ms.p50 == pytest.approx(100.0)
    assert m.e2el_ms.max == pytest.approx(1300.0)
    assert m.completions_in_window == 5
    assert m.request_throughput == pytest.approx(5 / 8.0)
    assert m.output_throughput == pytest.approx(5 * 11 / 8.0)  # every token of the 5 arrived inside
    assert m.achieved_concurrency == pytest.approx(5 * 1.3 / 8.0)
    assert m.guide_p95_token_latency_ms == pytest.approx(m.e2el_ms.p95 / 11)


def test_tokens_straddling_the_window_edge_are_split_evenly():
    # first token at 9.0, last at 11.0, 21 tokens: the first plus half of the other 20 are inside [0, 10)
    r = rec(sent=8.0, ttft=1.0, last=3.0, end=3.1, tokens=21)
    m = compute_metrics([r], window_start=0.0, window_end=10.0, max_tokens=21)
    assert m.output_throughput * 10.0 == pytest.approx(1 + 10)
    assert m.completions_in_window == 0  # it ended in the drain


def test_errors_by_kind_and_goodput():
    good_fast = rec(sent=1.0, ttft=0.1, last=1.1, end=1.2)
    good_slow = rec(sent=2.0, ttft=0.9, last=1.9, end=2.0)
    failed = rec(sent=3.0, ttft=0.1, last=0.1, end=0.2, ok=False, error_kind="http", status=503)
    slo = parse_slo("ttft=500,tpot=150")
    m = compute_metrics([good_fast, good_slow, failed], 0.0, 10.0, 11, slo)
    assert m.errors_by_kind == {"http": 1}
    assert m.failed == 1 and m.completed == 2
    assert m.request_goodput == pytest.approx(1 / 10.0)


def test_slo_percentile_counts_failed_and_cut_off_requests_as_missing_it():
    # 100 requests due in the window: 97 fast, 1 slow, 1 failed (503), 1 cut off by the drain.
    fast = [rec(sent=0.05 * i, ttft=0.1, last=1.1, end=1.2) for i in range(97)]
    slow = rec(sent=5.0, ttft=0.9, last=1.9, end=2.0)
    failed = rec(sent=5.1, ttft=0.1, last=0.1, end=0.2, ok=False, error_kind="http", status=503)
    cut = rec(sent=5.2, ttft=0.1, last=0.5, end=0.6, ok=False, error_kind="cancelled", tokens=4)
    slo = Slo(name="t", ttft_ms=500, tpot_ms=150, percentile=97)
    m = compute_metrics([*fast, slow, failed, cut], 0.0, 10.0, 11, slo)
    v = m.slo_result
    assert v is not None and v.requests == 100 and v.met == 97
    assert v.share_meeting == pytest.approx(0.97)
    assert v.within == {
        "ttft": pytest.approx(0.97),
        "tpot": pytest.approx(0.98),
    }  # the slow one's TPOT is 100
    assert v.passed, "97 of 100 within each limit meets a P97 SLO"
    assert m.request_goodput == pytest.approx(97 / 10.0)
    assert m.output_goodput == pytest.approx(97 * 11 / 10.0)  # tokens of the requests meeting it
    # At P98 the 98th request by TTFT is the slow one (900 ms): missed; the failed ones rank last.
    strict = compute_metrics([*fast, slow, failed, cut], 0.0, 10.0, 11, Slo(ttft_ms=500, percentile=98))
    assert strict.slo_result is not None and not strict.slo_result.passed
    assert strict.slo_result.at_percentile_ms["ttft"] == pytest.approx(900.0)
    at_99 = compute_metrics([*fast, slow, failed, cut], 0.0, 10.0, 11, Slo(ttft_ms=5000, percentile=99))
    assert at_99.slo_result is not None and at_99.slo_result.at_percentile_ms["ttft"] is None  # a failure
    assert not at_99.slo_result.passed, "a P99 SLO cannot be met with 2 of 100 requests failed"


def test_slo_presets_carry_mlperf_figures_and_names():
    assert {name: (s.ttft_ms, s.tpot_ms, s.percentile) for name, s in PRESETS.items()} == {
        "mlperf-llama2-70b": (2000, 200, 99),
        "mlperf-llama2-70b-interactive": (450, 40, 99),
        "mlperf-llama3.1-8b": (2000, 100, 99),
        "mlperf-llama3.1-8b-interactive": (500, 30, 99),
    }
    assert all(s.source and s.source.startswith("MLPerf Inference") for s in PRESETS.values())
    assert Slo.model_validate("mlperf-llama2-70b") == PRESETS["mlperf-llama2-70b"]
    changed = Slo.model_validate({"preset": "mlperf-llama3.1-8b", "percentile": 95})
    assert (changed.ttft_ms, changed.tpot_ms, changed.percentile) == (2000, 100, 95)
    assert parse_slo("mlperf-llama2-70b-interactive,p=90").percentile == 90
    assert parse_slo("ttft=500,tpot=50").label() == "TTFT <= 500 ms, TPOT <= 50 ms at P99"
    with pytest.raises(ValueError, match="unknown SLO preset 'mlperf-gpt5'; choose one of mlperf-llama2-70b"):
        Slo.model_validate("mlperf-gpt5")
    with pytest.raises(ValueError, match="needs at least one limit"):
        Slo.model_validate({"name": "empty"})


def test_bad_slo_is_named():
    with pytest.raises(ValueError, match="latency=5"):
        parse_slo("latency=5")


def test_guard_flags_short_concurrency_and_busy_loop():
    records = [rec(sent=float(i), ttft=0.1, last=0.5, end=0.6) for i in range(10)]
    m = compute_metrics(records, 0.0, 10.0, 11)
    client = ClientLoad(
        workers=1,
        worker_cpu_percent_mean=[99.0],
        worker_cpu_percent_max=[100.0],
        machine_cpu_percent_mean=50.0,
        loop_lag_ms_p50=1.0,
        loop_lag_ms_p99=80.0,
        loop_lag_ms_max=120.0,
        workers_reporting=1,
    )
    reasons = check(m, client, users=4, rate=None)
    assert any("concurrency" in r for r in reasons)
    assert any("99% of a core" in r for r in reasons)
    assert any("event-loop lag" in r for r in reasons)


def test_records_survive_a_torn_last_line(tmp_path):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.write(rec(0.0, 0.1, 0.2, 0.3))
        writer.write(rec(1.0, 0.1, 0.2, 0.3))
    with path.open("a") as handle:
        handle.write('{"request_id": "torn", "work')
    assert len(load_records(path)) == 2
