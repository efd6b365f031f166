"""The restart budget, as a pure function: OTP's intensity within a sliding period."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostvisor.supervision.budget import RestartBudget

pytestmark = pytest.mark.unit


def test_intensity_restarts_fit_in_the_period_and_one_more_escalates():
    budget: RestartBudget | None = RestartBudget(intensity=3, period=10.0)
    for now in (0.0, 1.0, 2.0):
        assert budget is not None
        budget = budget.spend(now)
    assert budget is not None
    assert budget.spend(9.9) is None


def test_restarts_older_than_the_period_leave_the_window():
    budget = RestartBudget(intensity=2, period=10.0, restarts=(0.0, 5.0))
    spent = budget.spend(10.5)  # 0.0 has left the window: 5.0 and 10.5 remain
    assert spent is not None
    assert spent.restarts == (5.0, 10.5)


def test_zero_intensity_never_restarts():
    assert RestartBudget(intensity=0, period=1.0).spend(0.0) is None


@given(
    intensity=st.integers(min_value=0, max_value=20),
    period=st.floats(min_value=0.1, max_value=100.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=50.0), max_size=60),
)
def test_the_budget_never_holds_more_than_its_intensity_within_one_period(
    intensity: int, period: float, gaps: list[float]
):
    budget = RestartBudget(intensity=intensity, period=period)
    now = 0.0
    accepted: list[float] = []
    for gap in gaps:
        now += gap
        spent = budget.spend(now)
        recent = [t for t in accepted if t > now - period]
        # Escalation happens exactly when the window would hold one more than allowed.
        assert (spent is None) == (len(recent) + 1 > intensity)
        if spent is not None:
            budget = spent
            accepted.append(now)
            assert len(budget.restarts) <= intensity
