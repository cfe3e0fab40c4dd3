"""The schedules' clock of a training run: how far it is (0 -> 1), when it is done, and how a wall-clock
budget turns into a number of optimiser steps.

The schedule's length in steps is train.steps, else epochs x steps per epoch, else — for a budget — planned
from the measured speed before the first step (``Clock.plan``). Every schedule (learning rate, EMA momentum,
DINO's teacher temperature, SwAV's queue start) is a function of the clock, so one seed and one length train
the same weights on a busy and a quiet machine. A budget's plan is checked against the loop's own rate on the
way (``Clock.replan``), and the wall clock only guards. train.max_steps stops a run early; it never reshapes
the schedule. The clock keeps its numbers in the loop's state dict, which every checkpoint saves.
"""

from __future__ import annotations

import warnings

from selfsup import dist
from selfsup.log import logger

REPLAN_AT = (0.1, 0.25, 0.5, 0.75, 0.9)  # fractions of a budget at which its plan is checked against the loop's rate
REPLAN_TOLERANCE = 0.03  # ... and changed when the steps left differ by more than this fraction
GUARD = 1.5  # a planned budget run stops anyway at this multiple of its budget


class Clock:
    """Reads and writes ``state`` (the loop's: step, train_seconds, planned_steps and a budget's plan).

    ``budget``: seconds (None: a fixed length); ``label``: the budget as the user wrote it, for messages."""

    def __init__(
        self, state: dict, budget: float | None, label: str | None, max_steps: int | None = None, replan: bool = True
    ):
        self.st, self.budget, self.label, self.max_steps, self.may_replan = state, budget, label, max_steps, replan
        self._guarded = False  # the guard's warning is said once

    @property
    def unplanned(self) -> bool:
        """A budget whose steps are not planned yet (before the first step, or after a resume that changed the
        run's length)."""
        return bool(self.budget) and self.st["planned_steps"] is None

    def progress(self) -> float:
        """step / planned_steps, or, for a budget, the line from its last plan's (step, progress) to 1 at
        planned_steps, so that a re-plan changes the clock's pace, never its value."""
        st = self.st
        if not st["planned_steps"]:
            return 0.0
        last = st["plan"][-1] if "plan" in st else {"step": 0, "progress": 0.0}
        a, p_a = last["step"], last["progress"]
        return min(1.0, p_a + (st["step"] - a) * (1.0 - p_a) / max(1, st["planned_steps"] - a))

    def done(self) -> bool:
        st = self.st
        if self.max_steps and st["step"] >= self.max_steps:
            return True
        if self.budget and st["train_seconds"] >= GUARD * self.budget:
            if dist.is_main() and not self._guarded:
                warnings.warn(
                    f"stopped at {GUARD} x the budget ({st['train_seconds']:.0f} s), step {st['step']} of "
                    f"{st['planned_steps']} planned: the machine slowed down after the plan was made",
                    stacklevel=2,
                )
            self._guarded = True
            return True
        return st["planned_steps"] is not None and st["step"] >= st["planned_steps"]

    def plan(self, rate: float, elapsed: float) -> None:
        """Fix the number of steps the rest of the budget affords at ``rate`` seconds per step, with ``elapsed``
        seconds of it spent (the slowest process's: every process plans alike)."""
        st, budget = self.st, self.budget
        assert budget is not None
        st["planned_steps"] = st["step"] + max(1, int((budget - elapsed) / max(rate, 1e-9)))
        st["plan"] = [plan_entry(st["step"], st["planned_steps"], rate, self.progress(), elapsed)]
        # checks only ahead of the plan (a resumed run with a longer budget may be past some of them already)
        st["replans_done"] = sum(f * budget <= elapsed for f in REPLAN_AT)
        if dist.is_main():
            logger.info(
                f"budget {self.label}: {rate:.3f} s per step, planned {st['planned_steps']} steps"
                + (
                    ", checked against the loop's own rate on the way"
                    if self.may_replan
                    else f" (train.steps={st['planned_steps']} trains the same weights on any machine)"
                )
            )

    def replan(self) -> None:
        """A shared machine's speed drifts after the probe (measured: a plan of 0.175 s per step, a sustained
        0.216, 18.5 minutes for a 15-minute budget), so at REPLAN_AT fractions of the budget the steps left
        are planned again from the loop's own rate since the last plan, when it differs from the plan by more
        than REPLAN_TOLERANCE of the steps left. The clock continues from where it is (no jump); the plan's
        history goes to summary.json. A plan left unchanged repeats with train.steps=N."""
        st, budget = self.st, self.budget
        if not budget or "plan" not in st:
            return
        k = st["replans_done"]
        if k >= len(REPLAN_AT) or st["train_seconds"] < REPLAN_AT[k] * budget:
            return
        st["replans_done"] = k + 1
        a_step, a_seconds = st["plan"][-1]["step"], st["plan"][-1]["seconds"]
        if st["step"] <= a_step or not self.may_replan:
            return
        rate = (st["train_seconds"] - a_seconds) / (st["step"] - a_step)
        left = st["planned_steps"] - st["step"]
        new_left = max(1, int((budget - st["train_seconds"]) / max(rate, 1e-9)))
        if abs(new_left - left) <= REPLAN_TOLERANCE * max(1, left):
            return
        st["plan"].append(plan_entry(st["step"], st["step"] + new_left, rate, self.progress(), st["train_seconds"]))
        st["planned_steps"] = st["step"] + new_left
        if dist.is_main():
            logger.info(
                f"budget {self.label}: {rate:.3f} s per step since step {a_step}, {left} steps left planned "
                f"-> {new_left} (re-planned at step {st['step']}, {st['train_seconds']:.0f} s)"
            )


def plan_entry(step: int, planned: int, rate: float, progress: float, seconds: float) -> dict:
    """One plan of a budget (summary.json's budget_plan): made at ``step`` with ``seconds`` trained and the
    schedules' clock at ``progress``, for ``planned`` steps in all at ``rate`` s per step."""
    return {
        "step": step,
        "planned_steps": planned,
        "s_per_step": round(rate, 5),
        "progress": progress,
        "seconds": seconds,
    }
