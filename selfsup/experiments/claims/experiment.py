"""What a claim is: its arms (a method with overrides), a measure and a rule (``Claim``), declared before
any run; selfsup.experiments.claims.rules judges, selfsup.experiments.claims.catalog lists the claims, selfsup.experiments.claims.harness runs them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from selfsup.experiments.bench import Entry, entry_config
from selfsup.experiments.claims.rules import INCONCLUSIVE, Rule
from selfsup.config import recipe_path, resolve, to_dict
from selfsup.errors import SelfsupError


@dataclass
class Arm:
    """One configuration of a claim's experiment."""

    name: str
    method: str
    overrides: tuple[str, ...] = ()
    data: str | None = None  # None: the claims' data set (--data)
    backbone: str | None = None
    recipe_of: str | None = None  # train with the method's recipe for this data set (a data set with no recipe
    #                               of its own would otherwise get the generic defaults: a full ResNet-18)

    def entry(self):
        config = None
        if self.recipe_of:
            config = recipe_path(self.method, self.recipe_of)
            if config is None:
                raise SelfsupError(f"arm {self.name}: no recipe configs/{self.method}_{self.recipe_of}.yaml")
        return Entry(self.name, self.method, str(config) if config else None)


@dataclass
class Claim:
    """A claim as a pre-registered experiment: everything that decides its verdict (arms, measure, rule
    with its direction, margin, seeds) is declared here before any run, and fingerprinted: runs trained
    under another fingerprint cannot judge it (selfsup.experiments.claims.harness)."""

    name: str
    statement: str
    arms: list[Arm]
    measure: Callable[[Path], dict[str, float]]  # a finished run -> its numbers
    rule: Rule  # selfsup.experiments.claims.rules: what must hold, in which direction, by how much
    columns: list[str] = field(default_factory=list)  # which numbers the table shows
    margin: float = 1.0  # the smallest difference that counts, in the measure's units (accuracy points)
    seeds: int = 3  # seeds per arm before a verdict other than "inconclusive" can be given
    report: Callable[[dict[str, list[dict]]], str] | None = None  # numbers shown beside the verdict, not judged
    history: tuple[str, ...] = ()  # earlier rules, dated, with the commit that changed them

    def describe(self) -> str:
        """The rule as docs/claims.md states it."""
        return f"{self.rule.describe(self.margin)} — over {self.seeds} seeds per arm (fewer: inconclusive)"

    def fingerprint(self) -> str:
        """A hash of everything registered: a change to any of it is a new experiment."""
        arms = [(a.name, a.method, a.overrides, a.data, a.backbone, a.recipe_of) for a in self.arms]
        sig = json.dumps(
            [
                self.statement,
                arms,
                getattr(self.measure, "__qualname__", str(self.measure)),
                self.columns,
                self.rule.describe(self.margin),
                self.margin,
                self.seeds,
            ],
            default=str,
        )
        return hashlib.sha1(sig.encode()).hexdigest()[:10]

    def decide(self, per_arm: dict[str, list[dict]]) -> tuple[str, str]:
        """(verdict, reason) by the rule; fewer seeds than registered: at most "inconclusive"."""
        verdict, reading = self.rule.judge(per_arm, self.margin)
        ran = min((len(v) for v in per_arm.values()), default=0)
        if ran < self.seeds:
            verdict, reading = (
                INCONCLUSIVE,
                (f"{ran} of the {self.seeds} registered seeds ran (the rule alone would say: {verdict}); {reading}"),
            )
        if self.report:
            reading += f". Reported, not judged: {self.report(per_arm)}"
        return verdict, reading


def arm_key(arm: Arm, data: str, budget: str = "5m", extra_overrides: tuple[str, ...] = ()) -> str:
    """A run directory name for the arm's resolved configuration: arms of different claims that resolve to
    the same run share it — SimCLR's default and ``train.batch_size=256`` (its recipe's batch), MAE's and
    ``method.mask_ratio=0.75`` — so each distinct run is trained once.

    Only the settings that differ from the method's defaults are hashed: a config field added later at a
    default that keeps the old behaviour leaves every key, and so every finished run, as it was."""
    cfg = to_dict(
        entry_config(
            arm.entry(), arm.data or data, None, arm.backbone, budget, None, [*arm.overrides, *extra_overrides]
        )
    )
    for volatile in (("out",), ("train", "device"), ("train", "seed")):  # the seed is the run's sub-directory
        _pop(cfg, volatile)
    defaults = to_dict(resolve([{"method": {"name": cfg["method"]["name"]}}]))
    changed = {".".join(path): value for path, value in _leaves(cfg) if _get(defaults, path, _MISSING) != value}
    changed["method.name"] = cfg["method"]["name"]  # a method's defaults are equal to nothing else's
    sig = json.dumps(changed, sort_keys=True, default=str)
    return f"{arm.method}-{hashlib.sha1(sig.encode()).hexdigest()[:8]}"


_MISSING = object()


def _leaves(d: dict, prefix: tuple[str, ...] = ()):
    """(path, value) of every non-dict value of a nested dict."""
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def _get(d: dict, path: tuple[str, ...], default):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _pop(d: dict, path: tuple[str, ...]) -> None:
    parent = _get(d, path[:-1], None) if len(path) > 1 else d
    if isinstance(parent, dict):
        parent.pop(path[-1], None)
