"""Progress of `distinfer bench run|sweep` while the load runs, against the real synthetic server.

On a terminal (a real pseudo-terminal, `pty.fork`): rich's live bar is drawn and redrawn, and its
last state shows every request the run recorded. Not on a terminal (pipes, as under CI or Ansible):
plain lines every --progress-interval seconds, scenario i of n of a sweep, elapsed and remaining
seconds rising and falling, request counts that only grow and end at the number of records
written, tokens/s, errors; no escape codes.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import yaml
from synthetic_server import DISTINFER, SyntheticServer

LINE = re.compile(
    r"^\[(?P<index>\d+)/(?P<total>\d+)\] (?P<name>[\w.-]+): (?P<phase>warm-up|measuring|draining), "
    r"(?P<elapsed>\d+)/(?P<duration>\d+) s, (?P<left>\d+) s left; (?P<done>\d+) requests done, "
    r"(?P<rate>[\d,.]+) tok/s, (?P<errors>\d+) errors$"
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _records(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line]


def _run_in_pty(argv: list[str], timeout_s: float) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as its stdin, stdout and stderr; returns (status, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.environ.update({"TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"})
        os.execv(argv[0], argv)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
        else:
            os.kill(pid, 15)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_live_bar_that_ends_with_every_request(
    server: SyntheticServer, tmp_path: Path
) -> None:
    out = tmp_path / "scenario"
    argv = [
        DISTINFER, "bench", "run", "--url", server.url, "--model", server.model, "--users", "2",
        "--duration", "5", "--warmup", "1", "--max-tokens", "8", "--scenario", "live", "--out", str(out),
    ]  # fmt: skip
    status, output = _run_in_pty(argv, 120)
    assert status == 0, output[-3000:]
    assert "━" in output, output[-2000:]  # rich's bar
    redraws = output.count("\x1b[2K")  # rich erases and redraws its lines in place
    assert redraws >= 4, f"only {redraws} redraws:\n{output[-2000:]}"
    plain = ANSI.sub("", output)
    assert "[1/1] live" in plain and "tok/s" in plain
    assert not LINE.search(plain.replace("\r", "\n")), "plain lines on a terminal"
    frames = re.findall(r"(\d+) requests done, ([\d,.]+) tok/s, (\d+) errors", plain)
    done = [int(d) for d, _, _ in frames]
    assert done == sorted(done) and done[0] < done[-1], done
    records = _records(out)
    assert done[-1] == len(records) > 10  # the last frame counts every record written
    assert int(frames[-1][2]) == sum(1 for r in records if not r["ok"])
    assert max(float(rate.replace(",", "")) for _, rate, _ in frames) > 0


def test_plain_lines_off_a_terminal_count_a_sweep_scenario_by_scenario(
    server: SyntheticServer, tmp_path: Path
) -> None:
    scenarios = tmp_path / "scenarios.yaml"
    defaults = {"model": server.model, "url": server.url, "max_tokens": 8, "duration_s": 4, "warmup_s": 1}
    scenarios.write_text(
        yaml.safe_dump(
            {"defaults": defaults, "scenarios": [{"name": "a", "users": 2}, {"name": "b", "users": 3}]}
        )
    )
    out = tmp_path / "run"
    argv = [DISTINFER, "bench", "sweep", "--scenarios", str(scenarios), "--out", str(out)]
    done = subprocess.run([*argv, "--progress-interval", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not ANSI.search(done.stderr) and not ANSI.search(done.stdout)
    lines = [m.groupdict() for m in map(LINE.match, done.stderr.splitlines()) if m]
    for index, name in ((1, "a"), (2, "b")):
        mine = [line for line in lines if line["name"] == name]
        assert {(line["index"], line["total"]) for line in mine} == {(str(index), "2")}
        assert len(mine) >= 4, done.stderr  # one a second over 4 s, plus the first and the last
        elapsed = [int(line["elapsed"]) for line in mine]
        left = [int(line["left"]) for line in mine]
        counts = [int(line["done"]) for line in mine]
        assert elapsed == sorted(elapsed) and left == sorted(left, reverse=True), mine
        assert counts == sorted(counts) and counts[0] < counts[-1], mine
        assert {"warm-up", "measuring"} <= {line["phase"] for line in mine}
        assert mine[-1]["phase"] == "draining" and mine[-1]["left"] == "0"
        records = _records(out / "scenarios" / name)
        assert counts[-1] == len(records) > 10
        assert int(mine[-1]["errors"]) == sum(1 for r in records if not r["ok"]) == 0
        assert any(float(line["rate"].replace(",", "")) > 0 for line in mine)
