"""Run-to-run noise: confidence intervals of repeated scenarios, and whether two runs really differ.

A scenario run N times (`repeat: N`, `--repeat N`) gives each headline figure as its mean with a
95 % confidence interval, mean +- t(0.975, N - 1) * s / sqrt(N) (Student's t, s the sample standard
deviation). Two runs' figures differ beyond the noise when Welch's t-test says so at 5 %: the
difference of the means against the standard error of both, sqrt(s1^2/n1 + s2^2/n2), with the
Welch-Satterthwaite degrees of freedom. When only one side was repeated, its variance stands in for
both; when neither was, the noise is unknown and the report says so rather than guess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# Student's t, two-sided 95 % (0.975 quantile), by degrees of freedom; beyond 30 the normal's 1.96
# is within 2 % of it.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
    2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
    2.045, 2.042,
)  # fmt: skip


def t975(df: float) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (fractional df round down)."""
    if df < 1:
        return math.inf
    whole = math.floor(df)
    return _T975[whole - 1] if whole <= len(_T975) else 1.96


@dataclass(frozen=True)
class Estimate:
    """A figure measured n times."""

    mean: float
    std: float  # sample standard deviation (n - 1); 0 for one value
    n: int

    @property
    def half_width(self) -> float | None:
        """Half the 95 % confidence interval; None for a single run (no noise known)."""
        return t975(self.n - 1) * self.std / math.sqrt(self.n) if self.n >= 2 else None

    def text(self, digits: int = 1) -> str:
        half = self.half_width
        body = f"{self.mean:,.{digits}f}"
        return body if half is None else f"{body} ± {half:,.{digits}f}"


def estimate(values: Sequence[float]) -> Estimate | None:
    data = [float(v) for v in values if v is not None]
    if not data:
        return None
    mean = sum(data) / len(data)
    std = math.sqrt(sum((v - mean) ** 2 for v in data) / (len(data) - 1)) if len(data) >= 2 else 0.0
    return Estimate(mean=mean, std=std, n=len(data))


Verdict = Literal["yes", "no", "unknown"]


@dataclass(frozen=True)
class Difference:
    delta: float
    delta_percent: float | None
    t: float | None
    df: float | None
    beyond_noise: Verdict


def difference(this: Estimate, other: Estimate) -> Difference:
    """Welch's t-test at 5 %, two-sided."""
    delta = this.mean - other.mean
    percent = 100.0 * delta / other.mean if other.mean else None
    v1, v2 = this.std**2 / this.n, other.std**2 / other.n
    if this.n < 2 and other.n < 2:
        return Difference(delta, percent, None, None, "unknown")
    if this.n < 2 or other.n < 2:  # one side's variance for both
        known = this if this.n >= 2 else other
        se = known.std * math.sqrt(1 / this.n + 1 / other.n)
        df: float = known.n - 1
    else:
        se = math.sqrt(v1 + v2)
        df = (v1 + v2) ** 2 / ((v1**2 / (this.n - 1)) + (v2**2 / (other.n - 1))) if v1 + v2 > 0 else math.inf
    if se == 0:
        return Difference(delta, percent, None, df, "yes" if delta else "no")
    t = delta / se
    return Difference(delta, percent, t, df, "yes" if abs(t) > t975(df) else "no")
