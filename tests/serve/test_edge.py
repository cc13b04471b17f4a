"""`distinfer edge-config` and `distinfer edge`: the edge's files from the shipped models files, as the
local platform's role writes them (tasks/edge.yml), checked by the real HAProxy.

The edge's behaviour in front of a real Serve (503 at the edge, the replica's gate never reached) is in
tests/serve/test_direct_layout.py; `distinfer serve`'s default path runs it there too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from distinfer.serve.edge import haproxy_binary
from distinfer.serve.launch import DISTINFER

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "files" / "models"


def distinfer(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DISTINFER, *args], input=stdin, capture_output=True, text=True, timeout=60)


def serve_config(models: Path, *replicas: str) -> str:
    overrides = [item for name in replicas for item in ("--replicas", name)]
    done = distinfer("serve-config", "--models", str(models), *overrides)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_shipped_models_file_through_its_serve_config_as_the_role_does(tmp_path: Path) -> None:
    config = serve_config(SHIPPED / "synthetic.yaml", "synthetic=3")
    spec = yaml.safe_load((SHIPPED / "synthetic.yaml").read_text())["models"][0]
    args = ["edge-config", "--serve-config", "-", "--listen", "0.0.0.0:8000", "--upstream", "127.0.0.1:24008"]
    first = distinfer(*args, "--out", str(tmp_path), stdin=config)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    slots = spec["max_ongoing_requests"] * 3  # replicas from the Serve config's deployments
    assert result == {
        "changed": True,
        "folder": str(tmp_path),
        "limits": {"model": "synthetic", "slots": slots, "queue": spec["max_queued_requests"]},
    }
    cfg = (tmp_path / "edge.cfg").read_text()
    assert f"server serve 127.0.0.1:24008 maxconn {slots}" in cfg and "bind 0.0.0.0:8000" in cfg
    assert f"queue(model) ge {spec['max_queued_requests']}" in cfg
    # The 503 the edge sends is the replica's, word for word.
    body = json.loads((tmp_path / "full.json").read_text())
    assert body["error"]["code"] == "overloaded" and "'synthetic' is at capacity" in body["error"]["message"]
    check = subprocess.run([haproxy_binary(), "-c", "-f", str(tmp_path / "edge.cfg")], capture_output=True)
    assert check.returncode == 0, check.stderr
    # The same config again changes nothing (the role's second run: changed=0).
    again = distinfer(*args, "--out", str(tmp_path), stdin=config)
    assert json.loads(again.stdout)["changed"] is False, again.stdout


def test_several_models_pass_through_to_serves_own_admission(tmp_path: Path) -> None:
    done = distinfer(
        "edge-config",
        *("--models", str(SHIPPED / "cpu-two-models.yaml")),
        *("--listen", "127.0.0.1:8000", "--upstream", "127.0.0.1:9000", "--out", str(tmp_path)),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["limits"] is None
    cfg = (tmp_path / "edge.cfg").read_text()
    assert "maxconn" not in cfg and "backend model" not in cfg and "default_backend passthrough" in cfg


def test_the_files_for_a_read_only_mount_as_json(tmp_path: Path) -> None:
    done = distinfer(
        "edge-config",
        *("--models", str(SHIPPED / "synthetic.yaml"), "--listen", "0.0.0.0:8000"),
        *("--upstream", "serve-svc:8000", "--at", "/etc/edge", "--admin-socket", "/tmp/edge.sock"),
    )
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)
    assert sorted(files) == ["502.http", "503.http", "504.http", "edge.cfg", "full.json"]
    assert "errorfile 503 /etc/edge/503.http" in files["edge.cfg"]
    assert "stats socket /tmp/edge.sock" in files["edge.cfg"]
    assert files["503.http"].startswith("HTTP/1.1 503 Service Unavailable\r\n")
    assert "\r\nRetry-After: 1\r\n" in files["503.http"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "8000"], "--listen takes HOST:PORT"),
        (["--upstream", "127.0.0.1:0"], "--upstream takes HOST:PORT"),
        (["--app-name", "other"], "no application 'other'"),
    ],
)
def test_bad_input_is_named_before_anything_is_written(tmp_path: Path, args: list[str], message: str) -> None:
    base = {"--listen": "0.0.0.0:8000", "--upstream": "127.0.0.1:24008"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [item for pair in base.items() for item in pair]
    config = serve_config(SHIPPED / "synthetic.yaml")
    done = distinfer(
        "edge-config", "--serve-config", "-", *argv, "--out", str(tmp_path / "out"), stdin=config
    )
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_the_edge_will_not_start_without_its_files(tmp_path: Path) -> None:
    done = distinfer("edge", "--folder", str(tmp_path))
    assert done.returncode != 0 and "distinfer edge-config --out" in done.stderr, done.stderr
