"""`site.yml` with the `local` platform on one Debian 13 (trixie) test host (issue 22, part 5).

The same playbook, inventory shape and synthetic model as `test_local_platform.py` on bookworm (its
helpers), on a host of the other release `make demo`'s path is tested on, driven from this (Debian 12)
machine with its venv mounted read-only, as every test host runs it. Debian 13 has none of the Prometheus
versions the inventories pin (Debian 12's), so role prometheus_local uses the release's own, and says so.
What `make demo` does, kept short (one 8-second scenario, no load-generator self-test: that runs on
the controller, whatever the hosts' release), in two playbook runs:

1. `site.yml` with its benchmark: it succeeds, the fallback is said for both packages, Prometheus
   runs from the release's package and scrapes the host, the Serve app answers a request, the
   scenario is measured with no error and the report is written;
2. `site.yml` again without the benchmark (a finished scenario is not run again anyway): changed=0 (the
   fallback installs nothing the second time).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_local_platform import (
    API_KEY,
    HTTP_PORT,
    MODELS,
    PROMETHEUS_PORT,
    USERS_PER_REPLICA,
    scenarios,
    site,
    write_inventory,
)
from testhosts import PROMETHEUS_DEFAULTS, TestHosts

pytestmark = pytest.mark.cluster

PINNED: dict[str, str] = yaml.safe_load(PROMETHEUS_DEFAULTS.read_text())["prometheus_local_package_versions"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("local-platform-deb13")
    (path / "models.yaml").write_text(yaml.safe_dump(MODELS, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    return {}


def installed_version(host: TestHosts, package: str) -> str:
    return host.ssh("node1", f"dpkg-query -W -f='${{Version}}' {package}").stdout.strip()


def targets_up(url: str, want: int = 2, timeout_s: float = 60) -> list[tuple[str, str]]:
    """(job, host) of every target Prometheus has scraped, once `want` are up (it scrapes every 5 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        active = httpx.get(f"{url}/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
        up = sorted((t["labels"]["job"], t["labels"]["host"]) for t in active if t["health"] == "up")
        if len(up) >= want or time.monotonic() > deadline:
            return up
        time.sleep(1)


def test_site_yml_brings_the_local_platform_up_on_debian_13(
    trixie_host: TestHosts, workdir: Path, state: dict[str, Any]
) -> None:
    hosts = trixie_host
    assert hosts.ssh("node1", "cut -d. -f1 /etc/debian_version").stdout.strip() == "13"
    inventory = write_inventory(
        hosts,
        workdir,
        ["node1"],
        distinfer_run_id="deb13",
        distinfer_scenarios=scenarios(
            [{"name": "deb13", "users_per_replica": USERS_PER_REPLICA}],
            duration_s=8,
            warmup_s=2,
            max_tokens=16,
        ),
        loadtest_certify=False,
    )
    run = site(inventory, workdir, "deb13-first")
    state["inventory"] = inventory

    # The benchmark measured the scenario on the Debian 13 host and the report was written.
    summary = json.loads((workdir / "results" / "deb13" / "scenarios" / "deb13" / "summary.json").read_text())
    assert summary["metrics"]["completed"] > 0 and summary["metrics"]["failed"] == 0, summary["metrics"]
    assert "## 1. Scalability results" in (workdir / "results" / "deb13" / "report" / "report.md").read_text()

    # The pinned versions are not Debian 13's: the release's own are in place, and the run said so.
    said = " ".join(run.output.split())
    for package, pinned in PINNED.items():
        version = installed_version(hosts, package)
        assert version and version != pinned, (package, version)
        assert (
            f"{package}: Debian 13" in said
            and f"(trixie) has no {pinned}, the pinned version (prometheus_local_package_versions);"
            f" using the release's own {version} instead."
            in said
        ), f"no fallback message for {package} in {run.log}"

    # Prometheus answers from that package and scrapes Ray and the node exporter on the host.
    head = hosts.host("node1").ip
    url = f"http://{head}:{PROMETHEUS_PORT}"
    build = httpx.get(f"{url}/api/v1/status/buildinfo", timeout=30).json()["data"]
    assert build["revision"] == installed_version(hosts, "prometheus"), build  # Debian's version
    assert targets_up(url) == [("node", "node1"), ("ray", "node1")]

    # The Serve app answers (the edge in front of it, with the API key).
    answer = httpx.post(
        f"http://{head}:{HTTP_PORT}/v1/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": "synth", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"], answer.text
    state["first_s"] = run.duration_s


def test_a_second_run_changes_nothing_on_debian_13(
    trixie_host: TestHosts, workdir: Path, state: dict[str, Any]
) -> None:
    inventory = state.get("inventory")
    assert inventory, "the first run did not complete"
    run = site(inventory, workdir, "deb13-idempotent", skip_tags=["benchmark"])
    assert "node1" in run.recap, run.describe()
    assert all(count == 0 for count in run.changed().values()), run.describe()
    first = state.get("first_s", 0.0)
    (workdir / "durations.txt").write_text(f"first {first:.1f} s, second {run.duration_s:.1f} s\n")
