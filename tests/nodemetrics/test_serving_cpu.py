"""The serving path's CPU by part (`serve_cpu_s` in each node sample), from real processes.

Processes here take Ray's titles with `exec -a` (Ray's own workers are retitled the same way in
effect: argv[0] is what psutil reads), burn a known amount of CPU, and the recorder must put it in
the right part: Serve's proxy and HAProxy, the router layout's ingress replica, the model replicas.
A Ray worker started idle and retitled later (same pid) counts once it becomes a replica.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from distinfer.nodemetrics.serving import part_of

DISTINFER = str(Path(sys.executable).with_name("distinfer"))
BURN = "import time\nt=time.process_time()\nwhile time.process_time()-t<{s}: pass\ntime.sleep(60)"


def burner(title: str, seconds: float) -> subprocess.Popen[bytes]:
    """A process titled like a Ray actor that uses `seconds` of CPU, then sleeps (bounded)."""
    code = BURN.format(s=seconds)
    return subprocess.Popen(
        ["bash", "-c", f'exec -a "{title}" {sys.executable} -c "$0"', code], start_new_session=True
    )


def retitled(idle: str, title: str, seconds: float) -> subprocess.Popen[bytes]:
    """Starts as an idle Ray worker for a moment, then becomes `title` in the same process."""
    code = BURN.format(s=seconds)
    inner = f'sleep 1.5; exec -a "{title}" {sys.executable} -c "$1"'
    return subprocess.Popen(
        ["bash", "-c", f'exec -a "{idle}" bash -c "$0" _ "$1"', inner, code], start_new_session=True
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_titles_name_the_parts():
    assert part_of(["ray::ProxyActor"], "python") == "proxy"
    assert part_of(["/usr/sbin/haproxy", "-f", "x.cfg"], "haproxy") == "proxy"
    assert part_of(["ray::ServeReplica:distinfer:OpenAIIngress"], "python") == "ingress"
    assert part_of(["ray::ServeReplica:distinfer:model-smollm2"], "python") == "replicas"
    assert part_of(["ray::ServeReplica:llm:model-a extra words"], "python") == "replicas"
    for other in (["ray::ServeController"], ["ray::IDLE"], ["/usr/bin/python3", "raylet"], []):
        assert part_of(other, "python") is None


COUNT_IN_OWN_NODE = """
import json, sys, time
sys.path[:0] = json.loads(sys.argv[1])
from test_serving_cpu import burner, retitled, stop
from distinfer.nodemetrics.serving import ServingCpu

counter = ServingCpu()
counter.prime()
procs = [
    burner("ray::ProxyActor", 0.4),
    burner("ray::ServeReplica:distinfer:OpenAIIngress", 0.6),
    burner("ray::ServeReplica:distinfer:model-a", 0.8),
    retitled("ray::IDLE", "ray::ServeReplica:distinfer:model-b", 0.5),
    burner("ray::ServeController", 0.7),  # Serve's, but not on the request path
]
try:
    used = dict.fromkeys(("proxy", "ingress", "replicas"), 0.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        for part, seconds in counter.take().items():
            used[part] += seconds
        if used["replicas"] >= 1.25 and used["ingress"] >= 0.55 and used["proxy"] >= 0.35:
            break
    time.sleep(0.5)
    for part, seconds in counter.take().items():  # nothing more: the burners now sleep
        used[part] += seconds
finally:
    stop(procs)
print(json.dumps(used))
"""


def test_cpu_of_real_processes_lands_in_its_part():
    # A PID namespace of its own with its own /proc, as a node (or a test host) is: only these
    # processes are there to count, not the Ray workers of other tests on this machine.
    paths = [str(Path(__file__).parent), *sys.path]
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", COUNT_IN_OWN_NODE,
         json.dumps(paths)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    used = json.loads(done.stdout)
    # Each burner's own CPU plus its interpreter's start (well under 0.3 s here), and nothing else's:
    # the controller's 0.7 s is in no part.
    assert 0.4 <= used["proxy"] < 0.4 + 0.3, used
    assert 0.6 <= used["ingress"] < 0.6 + 0.3, used
    assert 1.3 <= used["replicas"] < 1.3 + 0.6, used


def test_recorder_samples_carry_the_parts(tmp_path):
    out = tmp_path / "node.jsonl"
    proc = subprocess.Popen(
        [DISTINFER, "nodemetrics", "record", "--out", str(out), "--interval", "0.3", "--duration", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    burners = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or '"sample"' not in out.read_text()):
            time.sleep(0.05)
        burners.append(burner("ray::ServeReplica:distinfer:model-a", 0.5))  # after the priming
        proc.wait(timeout=60)
    finally:
        stop([proc, *burners])
    samples = [x for x in map(json.loads, out.read_text().splitlines()) if x["kind"] == "sample"]
    assert samples and all(set(x["serve_cpu_s"]) == {"proxy", "ingress", "replicas"} for x in samples)
    # At least the burner's (other tests' Ray replicas on this machine can only add to it).
    assert sum(x["serve_cpu_s"]["replicas"] for x in samples) >= 0.5
