"""The capacity planner (python/distinfer/capacity_plan.py): the scalability law recovered from points
it generated, exact through two points, replicas and nodes for a target, and the command on result
folders holding capacity searches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distinfer.capacity_plan import Point, fit, holdout, nodes_for
from distinfer.results.capacity import CapacityResult
from distinfer.results.scenario import CapacitySearch
from distinfer.results.slo import PRESETS

DISTINFER = str(Path(sys.executable).with_name("distinfer"))


def usl(n: int, lam: float, sigma: float, kappa: float) -> float:
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


def test_the_law_is_recovered_from_points_it_made() -> None:
    points = [Point(replicas=n, value=usl(n, 10.0, 0.08, 0.004)) for n in (1, 2, 3, 4, 6, 8)]
    model = fit(points)
    assert model.law == "usl"
    assert (model.lam, model.sigma, model.kappa) == pytest.approx((10.0, 0.08, 0.004), rel=1e-6)
    assert model.predict(16) == pytest.approx(usl(16, 10.0, 0.08, 0.004))
    # USL peaks: beyond sqrt((1 - sigma) / kappa) ~ 15 replicas, more replicas serve less.
    ceiling, at = model.ceiling()
    assert at == 15 and ceiling == pytest.approx(usl(15, 10.0, 0.08, 0.004))
    assert model.replicas_for(ceiling * 1.01) is None


def test_two_points_fix_amdahls_law_and_one_scales_linearly() -> None:
    two = fit([Point(replicas=1, value=100.0), Point(replicas=2, value=180.0)])
    assert (
        two.law == "amdahl" and two.predict(1) == pytest.approx(100) and two.predict(2) == pytest.approx(180)
    )
    assert two.sigma == pytest.approx(100 * 2 / 180 - 1)  # 2/C(2) - 1
    assert two.replicas_for(320) == 5 and two.predict(4) < 320 <= two.predict(5)
    assert two.ceiling() == (pytest.approx(100 / two.sigma), None)
    assert nodes_for(5, replicas_per_node=2) == 3
    one = fit([Point(replicas=2, value=50.0)])
    assert one.law == "linear" and one.predict(6) == pytest.approx(150)
    # A superlinear step is not extrapolated: sigma stays >= 0 (linear then).
    assert fit([Point(replicas=1, value=10.0), Point(replicas=2, value=25.0)]).sigma == 0
    _, (check,) = holdout([Point(replicas=n, value=usl(n, 10, 0.1, 0)) for n in (1, 2, 3)], {1, 2})
    assert check.replicas == 3 and check.error == pytest.approx(0, abs=1e-9)


def _search(run: Path, replicas: int, rate: float) -> None:
    result = CapacityResult(
        name=f"cap{replicas}", model="m", url="http://127.0.0.1:1", replicas=replicas, users_per_replica=8,
        slo=PRESETS["mlperf-llama2-70b"], search=CapacitySearch.model_validate({"start_rate": 1}),
        converged=True, capacity_rate=rate, lowest_failing_rate=rate * 1.04, limited_by_load_generator=False,
        at_capacity=None, note="", steps=[],
    )  # fmt: skip
    folder = run / "capacity" / f"cap{replicas}"
    folder.mkdir(parents=True)
    (folder / "capacity.json").write_text(result.model_dump_json())


def test_the_command_plans_from_capacity_searches_in_several_runs(tmp_path: Path) -> None:
    _search(tmp_path / "one", 1, 4.0)
    _search(tmp_path / "two", 2, 7.2)
    argv = [DISTINFER, "capacity-plan", str(tmp_path / "one"), str(tmp_path / "two"), "--target", "12"]
    out = subprocess.run([*argv, "--replicas-per-node", "2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "## capacity: m, cap 8 per replica, mlperf-llama2-70b" in out.stdout
    model = fit([Point(replicas=1, value=4.0), Point(replicas=2, value=7.2)])
    assert f"| 3 | {model.predict(3):,.4g} | - | - |" in out.stdout
    needed = model.replicas_for(12)
    assert needed is not None and f"target 12: {needed} replica(s), {-(-needed // 2)} node(s)" in out.stdout
    empty = subprocess.run([DISTINFER, "capacity-plan", str(tmp_path)], capture_output=True, text=True)
    assert empty.returncode == 2 and "holds no scenario" in empty.stderr
    json.dumps(model.model_dump())  # the fit is plain data
