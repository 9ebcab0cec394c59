"""Property tests of the event path: generated events never raise and counters never fall."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_exporter.state.tracker import TASK_EVENTS, WORKER_EVENTS
from tests.support.eventscript import Harness

KINDS = [*sorted(TASK_EVENTS | WORKER_EVENTS), "task-cancelled", "custom-thing"]
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
uuids = st.sampled_from(["u1", "u2", "u3"]) | anything
hostnames = st.sampled_from(["celery@a", "w@b", "gen1@web"]) | anything
numbers = st.floats(allow_nan=True) | st.integers(min_value=-(10**20), max_value=10**20) | anything


@st.composite
def events(draw: st.DrawFn) -> Any:
    """Mostly event-shaped dicts with any field wrong; now and then not a dict at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(anything)
    event: dict[str, Any] = {"type": draw(st.sampled_from(KINDS) | anything)}
    optional = {
        "uuid": uuids,
        "hostname": hostnames,
        "timestamp": numbers,
        "name": st.sampled_from(["app.a", "app.b"]) | anything,
        "queue": st.sampled_from(["q1", None]) | anything,
        "runtime": numbers,
        "eta": st.sampled_from([None, "2024-01-01T00:00:00+00:00", "2024-01-01T00:00:00"])
        | anything,
        "exception": st.sampled_from(["ValueError('x')", "boom"]) | anything,
        "active": numbers,
        "processed": numbers,
        "loadavg": st.lists(numbers, max_size=4) | anything,
    }
    for field, strategy in optional.items():
        if draw(st.booleans()):
            event[field] = draw(strategy)
    return event


def counter_values(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in h.registry.collect():
        if family.type in ("counter", "histogram"):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events() | st.lists(events(), max_size=4), min_size=1, max_size=25))
def test_no_exception_escapes_and_counters_never_decrease(messages: list[Any]) -> None:
    h = Harness(max_task_names=3, max_workers=3, max_tracked_tasks=4)
    before = counter_values(h)
    for message in messages:
        h.feed(message)  # must not raise, whatever the message
        h.clock.advance(1.0)
        h.tracker.expire()
        after = counter_values(h)
        for key, value in before.items():
            # A purged worker's host may take its series away, but never lowers a value.
            if key in after:
                assert after[key] >= value, key
        before = after
    total = sum(v for (name, _), v in before.items() if name == "celery_exporter_events_total")
    errors = sum(
        v for (name, _), v in before.items() if name == "celery_exporter_event_errors_total"
    )
    flat = sum(len(m) if type(m) is list else 1 for m in messages)
    assert total + errors == flat  # every event is either used or counted as an error
