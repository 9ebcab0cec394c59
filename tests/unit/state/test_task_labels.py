"""Label values remembered per raw value (state/task_labels.py) count exactly what checking them on
every event would: overflows every time, released hosts re-admitted, junk still rejected."""

from __future__ import annotations

import pytest

from celery_exporter.state import task_labels
from celery_exporter.state.event_fields import OVERFLOW
from tests.support.eventscript import Harness, event, received, sent, started

T0 = 1_700_000_000.0
OVERFLOWED = "celery_exporter_cardinality_overflow_total"


def test_an_overflowed_value_counts_its_overflow_on_every_event() -> None:
    h = Harness(max_workers=1, max_task_names=1)
    for i in range(3):
        h.feed(received(f"a{i}", "app.one", T0, hostname="celery@h1"))
        h.feed(received(f"b{i}", "app.two", T0, hostname="celery@h2"))
        h.feed(sent(f"c{i}", "app.one", T0, hostname="gen1@p1"))
        h.feed(sent(f"d{i}", "app.one", T0, hostname="gen2@p2"))
    assert h.task("received", "app.one", hostname="h1") == 3
    assert h.task("received", OVERFLOW, hostname=OVERFLOW) == 3
    assert h.task("sent", "app.one", hostname="p1") == 3
    assert h.task("sent", "app.one", hostname=OVERFLOW) == 3
    assert h.value(OVERFLOWED, label="task_name") == 3
    assert h.value(OVERFLOWED, label="hostname") == 6  # 3 worker-side, 3 producer


def test_a_released_host_is_admitted_again_by_its_cap() -> None:
    h = Harness(max_workers=1, worker_timeout=10, purge_offline_worker_metrics=20)
    h.feed(event("worker-online", "celery@h1", T0), received("a", "app.add", T0, "celery@h1"))
    h.clock.advance(60)  # h1 down and purged: its label leaves the cap
    h.tracker.expire()
    h.feed(received("b", "app.add", T0 + 60, hostname="celery@h2"))
    h.feed(received("c", "app.add", T0 + 60, hostname="celery@h1"))  # now over the cap
    assert h.task("received", "app.add", hostname="h2") == 1
    assert h.task("received", "app.add", hostname=OVERFLOW) == 1
    assert h.task("received", "app.add", hostname="h1") is None


@pytest.mark.parametrize("hostname", [["celery@h1"], "", "\ud800"])
def test_a_junk_node_name_is_still_a_bad_hostname(hostname: object) -> None:
    h = Harness()
    h.feed(received("a", "app.add", T0))  # a good one is remembered first
    h.feed(event("task-started", hostname, T0, uuid="a"))  # type: ignore[arg-type]
    h.feed(sent("b", "app.add", T0, hostname=hostname))  # type: ignore[arg-type]
    assert h.value("celery_exporter_event_errors_total", reason="bad_hostname") == 2


def test_remembered_values_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_labels, "REMEMBERED", 8)
    h = Harness()
    for i in range(20):
        h.feed(received(f"a{i}", "app.add", T0, hostname=f"celery@h{i}"))
        h.feed(started(f"a{i}", T0 + 1, hostname=f"celery@h{i}"))
        assert len(h.tracker.tasks.labels.worker_nodes) <= 8
    assert h.task("started", "app.add", hostname="h19") == 1
    assert h.task("started", "app.add", hostname="h3") == 1
