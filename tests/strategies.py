"""Hypothesis strategies the tests share."""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test


def any_text(max_size: int) -> st.SearchStrategy[str]:
    """Any text a user or the database could hand a page: markup characters,
    quotes, ampersands, any script; no lone surrogates (not valid UTF-8)."""
    return st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=max_size
    )


def run_machine(machine, *, examples: int, steps: int) -> None:
    """Run a Hypothesis state machine inside a test that has Django fixtures
    (function-scoped, hence the suppressed health check): derandomized, so a
    failure comes back on the next run, and with no deadline (each step
    touches PostgreSQL)."""
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )  # fmt: skip
