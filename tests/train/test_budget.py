"""The schedules' clock (selfsup.train.budget.Clock): progress of a fixed length, a budget's plan, a re-plan
that changes the pace and never the value, and when a run is done."""

from __future__ import annotations

import logging
import warnings

import pytest

from selfsup.train.budget import GUARD, Clock


def _state(**kw) -> dict:
    return {"step": 0, "train_seconds": 0.0, "planned_steps": None, **kw}


def test_a_fixed_length_runs_step_over_steps():
    st = _state(planned_steps=200)
    c = Clock(st, None, None)
    st["step"] = 50
    assert c.progress() == 0.25 and not c.done() and not c.unplanned
    st["step"] = 200
    assert c.progress() == 1.0 and c.done()


def test_max_steps_stops_without_reshaping_the_schedule():
    st = _state(planned_steps=100, step=10)
    c = Clock(st, None, None, max_steps=10)
    assert c.done() and c.progress() == 0.1


def test_a_budget_plans_the_steps_its_rest_affords(caplog):
    st = _state(train_seconds=10.0)
    c = Clock(st, 100.0, "100s")
    assert c.unplanned
    with caplog.at_level(logging.INFO, logger="selfsup"):
        c.plan(rate=0.5, elapsed=10.0)
    assert st["planned_steps"] == 180  # (100 - 10) / 0.5
    assert st["replans_done"] == 1  # the check at 10 % of the budget is behind it already
    assert "planned 180 steps" in caplog.text


def test_a_replan_keeps_the_clock_value_and_changes_its_pace():
    st = _state()
    c = Clock(st, 100.0, "100s")
    c.plan(rate=0.5, elapsed=0.0)  # 200 steps planned
    st["step"], st["train_seconds"] = 20, 20.0  # the loop runs at 1 s per step, not 0.5
    before = c.progress()
    c.replan()
    assert c.progress() == pytest.approx(before)  # 0.1: no jump
    assert st["planned_steps"] == 20 + 80  # 80 s left at 1 s per step
    st["step"] = 60
    assert c.progress() == pytest.approx(0.1 + 40 * 0.9 / 80)
    st["step"] = 100
    assert c.progress() == 1.0 and c.done()


def test_a_replan_within_tolerance_changes_nothing():
    st = _state()
    c = Clock(st, 100.0, "100s")
    c.plan(rate=0.5, elapsed=0.0)
    st["step"], st["train_seconds"] = 20, 10.1  # 1 % slower than planned
    c.replan()
    assert st["planned_steps"] == 200 and len(st["plan"]) == 1


def test_replan_off_keeps_the_first_plan():
    st = _state()
    c = Clock(st, 100.0, "100s", replan=False)
    c.plan(rate=0.5, elapsed=0.0)
    st["step"], st["train_seconds"] = 20, 20.0
    c.replan()
    assert st["planned_steps"] == 200


def test_the_guard_stops_a_slowed_run_and_says_so_once():
    st = _state(planned_steps=1000, step=10, train_seconds=GUARD * 100.0)
    c = Clock(st, 100.0, "100s")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert c.done() and c.done()
    assert len(w) == 1 and "slowed down" in str(w[0].message)
