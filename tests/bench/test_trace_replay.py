"""Published traces replayed on their own clock, and multi-turn sessions, against the synthetic server.

`files/scenarios/traces.yaml` runs as shipped (only its URL pointed at this test's server) through
`distinfer bench sweep`, real Locust workers included. Its scenarios replay the shipped slices of
`files/traces/` (docs/traces.md). What is checked comes from the server's own log (the synthetic
engine's truth log: when its model server received each request, the prompt tokens it counted and the
tokens it sent), joined to the records by request id:
- every row of the trace window arrived, on the trace's schedule (time-scaled): the P99 of received
  minus due is printed and bounded;
- the server counted exactly the prompt and output tokens each row asked (scaled and capped);
- Mooncake rows that share hash ids share that text: identical prefixes, block for block;
- a later turn of a conversation carries the whole history before it.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from synthetic_server import DISTINFER, FINISHED, SyntheticServer, synthetic_server

from distinfer.bench.sessions import plan_sessions
from distinfer.bench.traces import PromptSynth, TraceError, load_counter, read_trace, schedule, window
from distinfer.config import load_models_file
from distinfer.report.blocks import to_markdown
from distinfer.report.prometheus import Pair, ServerFigures
from distinfer.report.replay import replay_section
from distinfer.results.load import load_run
from distinfer.results.records import RequestRecord, load_records
from distinfer.results.scenario import ScenarioSpec, load_sweep
from distinfer.results.summary import Summary
from distinfer.results.workload import TraceReplay

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "files" / "scenarios" / "traces.yaml"
TRACES = ["azure-conv", "azure-code", "mooncake-conv"]
# Received minus due, P99: the client's lateness plus the serving path to the engine, on a 2-core
# machine shared with other test runs.
LAG_P99_LIMIT_MS = 250.0


@pytest.fixture(scope="module")
def swept(server: SyntheticServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("traces") / "run"
    cmd = [DISTINFER, "bench", "sweep", "--scenarios", str(SHIPPED), "--out", str(out), "--url", server.url,
           "--no-certify", "--progress-interval", "60"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode in FINISHED, result.stderr[-3000:]
    return out


def _truth(server: SyntheticServer) -> dict[str, dict]:
    lines = server.truth_log.read_text().splitlines()
    return {d["request_id"]: d for d in map(json.loads, lines)}


def _scenario(out: Path, name: str) -> tuple[ScenarioSpec, list[RequestRecord], Summary]:
    folder = out / "scenarios" / name
    summary = Summary.load_file(folder)
    return summary.scenario, load_records(folder / "records.jsonl"), summary


@pytest.mark.parametrize("name", TRACES)
def test_a_trace_window_arrives_on_its_schedule_with_the_tokens_asked(swept, server, name):
    spec, records, summary = _scenario(swept, name)
    assert spec.trace is not None
    rows = window(read_trace(spec.trace.file), spec.trace, spec.duration_s)
    assert len(rows) > 100, len(rows)
    assert sorted(r.trace_index for r in records if r.trace_index is not None) == list(range(len(rows)))
    assert all(r.ok for r in records), [r.error for r in records if not r.ok][:3]
    start = summary.started
    truth = _truth(server)
    lags = []
    for record in records:
        row = rows[record.trace_index]  # type: ignore[index]
        # Due on the trace's own clock, time-scaled.
        assert record.scheduled == pytest.approx(start + row.at_s / spec.trace.time_scale, abs=1e-6)
        seen = truth[record.request_id]
        lags.append((seen["received_unix"] - record.scheduled) * 1000.0)
        assert seen["prompt_tokens"] == record.input_tokens_asked == spec.trace.scale_input(row.input_tokens)
        assert seen["completion_tokens"] == record.max_tokens == spec.trace.scale_output(row.output_tokens)
    p50, p99 = np.percentile(lags, [50, 99])
    stated = f"{name}: {len(lags)} arrivals, server received - due: P50 {p50:.1f} ms, P99 {p99:.1f} ms"
    print(stated)
    assert p99 < LAG_P99_LIMIT_MS, stated
    # The gaps between arrivals are the trace's: each received within the lag bound of its due time.
    assert min(lags) > -1.0


def _shared_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_mooncake_hash_ids_give_identical_prefixes():
    spec = next(s for s in load_sweep(SHIPPED, {}) if s.name == "mooncake-conv")
    assert spec.trace is not None
    rows = window(read_trace(spec.trace.file), spec.trace, spec.duration_s)
    arrivals = schedule(spec.trace, spec.duration_s, spec.seed)
    block = spec.trace.block_tokens
    words = [a.prompt.split() for a in arrivals]
    seen: dict[int, list[str]] = {}
    shared = 0
    for row, prompt in zip(rows, words, strict=True):
        for position, hash_id in enumerate(row.hash_ids):
            text = prompt[position * block : (position + 1) * block]
            if len(text) < block:
                break  # the prompt's end (its last block cut short, or the cap)
            if hash_id in seen:
                assert text == seen[hash_id], (hash_id, position)
                shared += 1
            seen[hash_id] = text
    assert shared > 100  # block 0 starts every request; 43 other blocks recur in this minute
    # Requests sharing their first k hash ids (in this minute: a conversation's later turn sharing 14
    # blocks with its first, and two more pairs) share their first k blocks of text, and no more.
    pairs = 0
    for i, j in itertools.combinations(range(len(rows)), 2):
        k = _shared_prefix(rows[i].hash_ids, rows[j].hash_ids)
        if k < 2:
            continue
        pairs += 1
        assert words[i][: k * block] == words[j][: k * block], (i, j, k)
        after = min(len(words[i]), len(words[j]), (k + 1) * block)
        if after > k * block:
            assert words[i][k * block : after] != words[j][k * block : after], (i, j, k)
    assert pairs == 3


def test_a_later_turn_sends_the_whole_history(swept, server):
    spec, records, _ = _scenario(swept, "sessions")
    assert spec.sessions is not None
    conversations = {c.index: c for c in plan_sessions(spec.sessions, spec.seed)}
    truth = _truth(server)
    by_session: dict[int, list[RequestRecord]] = {}
    for record in records:
        assert record.session is not None and record.turn is not None
        by_session.setdefault(record.session, []).append(record)
    assert len(by_session) == len(conversations)
    multi = 0
    for session, turns in by_session.items():
        turns.sort(key=lambda r: r.turn or 0)
        assert [r.turn for r in turns] == list(range(1, len(turns) + 1))
        history = 0
        for record in turns:
            asked = conversations[session].turns[(record.turn or 1) - 1]
            # The synthetic engine's chat layout: "user: <words>" per user message, "assistant: <answer>"
            # per answer, then "assistant:": one word per role label.
            history += 1 + asked.input_tokens
            expected = history + 1
            assert truth[record.request_id]["prompt_tokens"] == expected, (session, record.turn)
            history += 1 + (record.completion_tokens or 0)
        multi += len(turns) > 1
    assert multi >= 3
    # Each turn waited for the answer before it, then the think time.
    for turns in by_session.values():
        for before, after in itertools.pairwise(turns):
            assert after.sent >= before.end


def test_a_bad_trace_file_is_refused_with_the_line_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\nyesterday,1,2\n")
    with pytest.raises(TraceError, match=r"bad.csv:3: TIMESTAMP 'yesterday'"):
        read_trace(bad)
    with pytest.raises(TraceError, match="cannot tell the trace format"):
        (tmp_path / "odd.csv").write_text("a,b,c\n1,2,3\n")
        read_trace(tmp_path / "odd.csv")


def test_burstgpt_and_azure_2024_rows_read_as_published(tmp_path):
    """BurstGPT's documented columns and first rows (its README; its data files are in Git LFS and not
    shipped), and the 2024 Azure files' timestamps with a UTC offset."""
    burst = tmp_path / "burst.csv"
    burst.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n45,ChatGPT,1087,230,1317,Conversation log\n"
        "118,GPT-4,417,276,693,Conversation log\n"
    )
    assert [(r.at_s, r.input_tokens, r.output_tokens) for r in read_trace(burst)] == [
        (0.0, 472, 18), (40.0, 1087, 230), (113.0, 417, 276)]  # fmt: skip
    azure = tmp_path / "week.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.009930+00:00,2162,5\n"
        "2024-05-10 00:00:01.509930+00:00,100,7\n"
    )
    assert [r.at_s for r in read_trace(azure)] == pytest.approx([0.0, 1.5])


def test_words_prompts_are_exact_and_a_real_tokenizer_is_checked():
    synth = PromptSynth(load_counter("words"), 0, 4)
    text = synth.prompt(10, (7, 8), "x")
    assert len(text.split()) == 10 and text.split()[:4] == synth.block(7)
    with pytest.raises(TraceError, match="neither `words`"):
        load_counter("/nonexistent/tokenizer")


def test_the_report_says_whether_the_schedule_was_kept(swept):
    result = subprocess.run([DISTINFER, "report", str(swept)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    report = (swept / "report" / "report.md").read_text()
    section = report[report.index("## Trace replays and sessions") :]
    section = section[: section.index("\n## ", 1)]
    for name in [*TRACES, "sessions"]:
        assert f"### {name}" in section
    _, _, summary = _scenario(swept, "azure-conv")
    replay = summary.replay
    assert replay is not None
    # Offered against achieved over time: what was due per bin is what the trace has in that bin.
    spec = summary.scenario
    assert spec.trace is not None
    rows = window(read_trace(spec.trace.file), spec.trace, spec.duration_s)
    assert replay.requests == len(rows) and replay.dropped == 0
    width = replay.rate_over_time[1].start_s
    for rate_bin in replay.rate_over_time:
        due = sum(
            1 for r in rows if rate_bin.start_s <= r.at_s / spec.trace.time_scale < rate_bin.start_s + width
        )
        assert rate_bin.offered_per_s == pytest.approx(due / width, abs=1e-6)
    assert sum(b.achieved_per_s for b in replay.rate_over_time) * width == pytest.approx(len(rows), abs=2)
    assert f"P99 {replay.send_lag_ms.p99:.1f} ms" in section
    assert "| input, trace |" in section and "| output, served |" in section
    assert replay.input_tokens.trace.max == max(r.input_tokens for r in rows)
    assert "within SLO synthetic-clock" in section
    assert "Prefix cache: not measured" in section
    # Sessions: TTFT by turn.
    assert "Time to first token by turn" in section and "| 2 |" in section


def test_a_real_tokenizer_counts_the_prompts_exactly():
    """SmolLM2's tokenizer (the demo's model): every prompt of the Mooncake window is exactly its token
    count, and a shared hash block is the same token ids."""
    counter = load_counter("smollm2")
    replay = TraceReplay(
        file="files/traces/mooncake_conversation_60s.jsonl", length_scale=0.05, max_input_tokens=2048,
        tokenizer="smollm2",
    )  # fmt: skip
    arrivals = schedule(replay, 6, 0, counter)
    assert len(arrivals) > 20
    for arrival in arrivals:
        assert counter.count(arrival.prompt) == arrival.input_tokens
    first, second = arrivals[0].prompt, arrivals[1].prompt  # both start with hash block 0
    block = replay.block_tokens
    assert first.split()[:block] == second.split()[:block]
    assert counter.count(" ".join(first.split()[:block])) == block


def _bench_run(
    server: SyntheticServer, spec: dict, out: Path, work: Path
) -> subprocess.CompletedProcess[str]:
    """`distinfer bench run --spec FILE` against the server, from the repository's root."""
    spec_file = work / "spec.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [DISTINFER, "bench", "run", "--spec", str(spec_file), "--url", server.url, "--model", server.model,
           "--out", str(out)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_sessions_from_a_file_keep_its_turns_and_think_times(server, tmp_path):
    conversations = tmp_path / "sessions.jsonl"
    conversations.write_text(
        '{"start_s": 0.0, "turns": [{"input_tokens": 12, "output_tokens": 5, "think_s": 0.8},'
        ' {"input_tokens": 7, "output_tokens": 3, "think_s": 0}]}\n'
        '{"start_s": 0.5, "turns": [{"input_tokens": 30, "output_tokens": 4}]}\n'
    )
    spec = {"name": "from-file", "users": 8, "duration_s": 3, "sessions": {"file": str(conversations)}}
    out = tmp_path / "out"
    result = _bench_run(server, spec, out, tmp_path)
    assert result.returncode in FINISHED, result.stderr[-2000:]
    records = sorted(load_records(out / "records.jsonl"), key=lambda r: (r.session or 0, r.turn or 0))
    assert [(r.session, r.turn, r.max_tokens, r.input_tokens_asked) for r in records] == [
        (0, 1, 5, 12), (0, 2, 3, 7), (1, 1, 4, 30)]  # fmt: skip
    assert records[1].sent - records[0].end >= 0.8  # the first turn's think time
    assert records[2].scheduled - records[0].scheduled == pytest.approx(0.5)
    truth = _truth(server)
    # user: 12 words / assistant: 5 words / user: 7 words / assistant:
    assert truth[records[1].request_id]["prompt_tokens"] == (1 + 12) + (1 + 5) + (1 + 7) + 1


def test_conflicting_or_empty_workloads_are_refused_before_any_load(server, tmp_path):
    base = {"users": 4, "duration_s": 2}
    trace = {"file": "files/traces/azure2023_code_10min.csv", "start_s": 60, "length_s": 20, "time_scale": 10}
    cases = [
        ({**base, "rate": 2, "trace": trace}, "rate and trace are all set"),
        ({**base, "duration_s": 5, "trace": trace}, "trace.length_s 20 at time_scale 10 lasts 2 s"),
        ({"users": 4, "trace": trace}, "has no row in its window [60 s, 80 s)"),
        ({**base, "api": "completions", "sessions": {"count": 2}}, "set api: chat"),
        ({**base, "trace": {**trace, "file": "files/traces/missing.csv"}}, "cannot read trace file"),
    ]
    for spec, message in cases:
        result = _bench_run(server, spec, tmp_path / "refused", tmp_path)
        assert result.returncode == 2, (spec, result.stderr[-1500:])
        assert message in result.stderr, (message, result.stderr[-1500:])
    assert not (tmp_path / "refused" / "records.jsonl").exists()


def test_the_replay_section_gives_vllms_prefix_cache_hit_rate_where_prometheus_has_it(swept):
    """The figure itself is asked from Prometheus as the server section asks it (report/prometheus.py,
    tests/prometheus/); here: the replay section shows it for its scenario."""
    empty = Pair()
    figures = ServerFigures(
        prometheus="http://prometheus:9090",
        window_s=5.5,
        serve_queue_wait_ms=empty,
        queued_at_handles=empty,
        ongoing_per_replica=empty,
        engine_running=empty,
        engine_waiting=empty,
        kv_cache_percent=empty,
        gpu_util_percent=empty,
        gpu_mem_percent=empty,
        prefix_cache_hit_percent=41.25,
    )
    text = to_markdown(replay_section(load_run(swept), {"mooncake-conv": figures}))
    mooncake = text[text.index("### mooncake-conv") :]
    assert "Prefix cache: 41.2 % of prompt tokens looked up were cached (vLLM)" in mooncake
    assert "Prefix cache: not measured" in text[: text.index("### mooncake-conv")]


def test_a_trace_prompt_past_the_models_context_stops_the_run_before_any_load(tmp_path):
    """The probe sends the window's longest prompt: a 512-token model refuses Mooncake's, capped at 2048."""
    (tmp_path / "small").mkdir()
    with synthetic_server(tmp_path / "small", max_model_len=512) as small:
        spec = next(s for s in load_sweep(SHIPPED, {}) if s.name == "mooncake-conv")
        data = {**spec.model_dump(mode="json", exclude={"url", "model"}), "name": "too-long"}
        result = _bench_run(small, data, tmp_path / "out", tmp_path)
    assert result.returncode == 2, result.stderr[-1500:]
    assert "context" in result.stderr and "lower trace.max_input_tokens" in result.stderr, result.stderr[
        -1500:
    ]
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_the_demo_replay_as_shipped_fits_the_demos_model():
    """`files/scenarios/traces-demo.yaml` as shipped (its run against the demo's vLLM deployment is the
    benchmark in benchmarks/README.md, too slow for the suite): it asks for a model of the demo's models
    file, its window arrives in time order inside its 30 s, and every prompt is exactly its token count
    by SmolLM2's own tokenizer, within its max_input_tokens, and leaves room for its answer in SmolLM2's
    context (8192 tokens: the demo's models file sets no max_model_len)."""
    (spec,) = load_sweep(ROOT / "files" / "scenarios" / "traces-demo.yaml", {})
    demo = load_models_file(ROOT / "files" / "models" / "smollm2.yaml")
    assert spec.model in {m.name for m in demo.models} and spec.trace is not None
    counter = load_counter(spec.trace.tokenizer)
    arrivals = schedule(spec.trace, spec.duration_s, spec.seed, counter)
    assert len(arrivals) > 100
    dues = [a.due_s for a in arrivals]
    assert dues == sorted(dues) and dues[0] >= 0 and dues[-1] <= spec.duration_s
    for arrival in arrivals:
        assert counter.count(arrival.prompt) == arrival.input_tokens <= spec.trace.max_input_tokens
        assert arrival.input_tokens + arrival.output_tokens <= 8192
