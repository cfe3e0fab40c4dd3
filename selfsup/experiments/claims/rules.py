"""The one rule engine every claim is judged by: a claim's rule is data, declared before any run.

A rule is a ``Diff`` (one comparison of two measured means) or ``All`` of several. Every ``Diff`` reads

    d = mean(a.key) - factor x mean(b.b_key)       (or - const),  in the measure's own units (absolute points)

and decides with the same two numbers: the claim's ``margin`` (or the Diff's own, for a measure in other
units) and the seeds' ``spread`` = 2 x the larger sample std of the two sides (0 with one seed). Let
need = max(margin, spread):

- ``higher``: holds when d > need, does not hold when d < -need, else inconclusive;
- ``lower``: the mirror;
- ``not_lower`` (matches or beats): holds when d - spread >= -margin, does not hold when d + spread < -margin;
- ``same``: holds when |d| + spread <= margin, does not hold when |d| - spread > margin;
  anything between is inconclusive.

``All`` holds when every part holds, does not hold when any part does not, else is inconclusive. A rule's
``describe()`` is the sentence docs/claims.md prints, and, with the claim's other registered settings, what
the harness fingerprints: a rule changed after its runs exist cannot reuse them (selfsup.experiments.claims.harness).
Hand-written: a few lines of arithmetic no statistics library states in this form.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
EXPECTATIONS = ("higher", "lower", "not_lower", "same")


def _values(per_arm: dict[str, list[dict]], arm: str, key: str) -> list[float]:
    return [m[key] for m in per_arm.get(arm, []) if isinstance(m.get(key), (int, float))]


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        raise ValueError("no measured values")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass(frozen=True)
class Diff:
    """``a``'s ``key`` against ``b``'s ``b_key`` (default ``key``; ``b`` default ``a``) scaled by ``factor``,
    or against the constant ``const``; ``expect`` one of EXPECTATIONS; ``margin`` None: the claim's."""

    a: str
    key: str
    b: str | None = None
    b_key: str | None = None
    expect: str = "higher"
    factor: float = 1.0
    const: float | None = None
    margin: float | None = None
    unit: str = "points"

    def __post_init__(self):
        if self.expect not in EXPECTATIONS:
            raise ValueError(f"expect {self.expect!r}: one of {', '.join(EXPECTATIONS)}")
        if (self.b is None and self.b_key is None) == (self.const is None):
            raise ValueError("compare with another arm or key (b, b_key) or with a constant (const), not both")

    def _rhs(self) -> str:
        if self.const is not None:
            return f"{self.const:g}"
        scale = "" if self.factor == 1 else f"{self.factor:g} x "
        return f"{scale}{self.b or self.a}'s {self.b_key or self.key}"

    def describe(self, margin: float) -> str:
        m = self.margin if self.margin is not None else margin
        lhs, rhs = f"{self.a}'s {self.key}", self._rhs()
        unit = self.unit[:-1] if m == 1 and self.unit.endswith("s") else self.unit
        amount = f"{m:g} {unit}".strip()
        need = f"max({amount}, twice the larger std)" if m else "twice the larger std"
        return {
            "higher": f"{lhs} above {rhs} by more than {need}",
            "lower": f"{lhs} below {rhs} by more than {need}",
            "not_lower": f"{lhs} not below {rhs} by more than {amount}, even with twice the larger std against it",
            "same": f"{lhs} within {amount} of {rhs}, even with twice the larger std against it",
        }[self.expect]

    def judge(self, per_arm: dict[str, list[dict]], margin: float) -> tuple[str, str]:
        m = self.margin if self.margin is not None else margin
        sides = [(self.a, self.key)] + ([] if self.const is not None else [(self.b or self.a, self.b_key or self.key)])
        values = [_values(per_arm, arm, key) for arm, key in sides]
        unmeasured = [f"{arm}'s {key}" for (arm, key), v in zip(sides, values) if not v]
        if unmeasured:  # a measurement that failed or a key the measure does not give: no verdict from nothing
            return INCONCLUSIVE, f"{' and '.join(unmeasured)} not measured"
        ma, sa = _mean_std(values[0])
        if self.const is not None:
            mb, sb = self.const, 0.0
            rhs = f"{self._rhs()}"
        else:
            mb, sb = _mean_std(values[1])
            rhs = f"{self._rhs()} {mb:.3g}"  # the measured value, then (scaled) what is compared
            mb, sb = self.factor * mb, self.factor * sb
            rhs += f" (= {mb:.3g})" if self.factor != 1 else ""
        d, spread = ma - mb, 2 * max(sa, sb)
        need = max(m, spread)
        if self.expect == "higher":
            verdict = HOLDS if d > need else FAILS if d < -need else INCONCLUSIVE
        elif self.expect == "lower":
            verdict = HOLDS if d < -need else FAILS if d > need else INCONCLUSIVE
        elif self.expect == "not_lower":
            verdict = HOLDS if d - spread >= -m else FAILS if d + spread < -m else INCONCLUSIVE
        else:
            verdict = HOLDS if abs(d) + spread <= m else FAILS if abs(d) - spread > m else INCONCLUSIVE
        reading = (
            f"{self.a}'s {self.key} {ma:.3g} − {rhs} = {d:+.3g} (needed: "
            f"{self.expect.replace('_', ' ')}, margin {m:g}, spread {spread:.2g})"
        )
        return verdict, reading


@dataclass(frozen=True)
class All:
    """Every part must hold; one that does not makes the whole not hold; otherwise inconclusive."""

    parts: tuple[Diff, ...]

    def __init__(self, *parts: Diff):
        object.__setattr__(self, "parts", tuple(parts))

    def describe(self, margin: float) -> str:
        return "; and ".join(p.describe(margin) for p in self.parts)

    def judge(self, per_arm: dict[str, list[dict]], margin: float) -> tuple[str, str]:
        judged = [p.judge(per_arm, margin) for p in self.parts]
        verdicts = [v for v, _ in judged]
        verdict = FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE
        return verdict, "; ".join(f"{r}: {v}" for v, r in judged)


Rule = Diff | All
