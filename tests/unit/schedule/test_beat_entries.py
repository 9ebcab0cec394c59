"""-A/--app: loading the user's app (one-line errors, exit 2) and its beat_schedule's expected
runs (intervals and crontabs), and the beat collector's overdue arithmetic with a fake clock."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from celery import Celery
from celery.schedules import crontab

from celery_exporter import cli
from celery_exporter.config import Config, ConfigError
from celery_exporter.exposition.beat_collector import BeatCollector
from celery_exporter.exposition.catalogue import FamilyFactory
from celery_exporter.schedule.beat_entries import beat_entries
from celery_exporter.schedule.user_app import load_app
from celery_exporter.state.tracker import Tracker
from tests.support.eventscript import received, sent

GOOD = """
from celery import Celery
app = Celery("user", broker="memory://")
app.conf.beat_schedule = {"tick": {"task": "user.tick", "schedule": 10.0}}
not_an_app = 42
"""


@pytest.fixture
def user_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "ce_user_good.py").write_text(GOOD)
    (tmp_path / "ce_user_raises.py").write_text("raise RuntimeError('settings\\nmissing')\n")
    (tmp_path / "ce_user_exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "ce_user_empty.py").write_text(
        "from celery import Celery\napp = Celery('e', broker='memory://')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("ce_user_")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ce_user_nope:app", "cannot load it: ModuleNotFoundError"),
        ("ce_user_good:missing", "module 'ce_user_good' has no 'missing'"),
        ("ce_user_good:not_an_app", "names a int, not a Celery app"),
        ("ce_user_raises:app", "cannot load it: RuntimeError: settings missing"),
        ("ce_user_exits:app", "cannot load it: SystemExit: 3"),
        ("ce_user_empty:app", "beat_schedule is empty"),
        ("bad-module:app", "want module:attribute"),
    ],
)
def test_a_bad_app_is_one_line_and_exit_2(
    spec: str,
    message: str,
    user_modules: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CE_BROKER_URL", raising=False)
    # A port nothing listens on: an error must come before anything connects anyway.
    with pytest.raises(SystemExit) as exc:
        cli.main(["--broker-url", "redis://127.0.0.1:1/0", "-A", spec])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("celery-exporter: error: --app ")
    assert message in err


def test_ce_app_names_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_cli import build

    monkeypatch.setenv("CE_APP", "proj.celery:app")
    assert build(["--broker-url", "redis://x"], monkeypatch).app == "proj.celery:app"


def test_a_good_app_loads(user_modules: Path) -> None:
    app = load_app("ce_user_good:app")
    (entry,) = beat_entries(app, "ce_user_good:app", 100)
    assert (entry.entry, entry.task) == ("tick", "user.tick")


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_expected_runs_follow_celerys_schedules() -> None:
    app = Celery("t", broker="memory://")
    app.conf.timezone = "UTC"
    app.conf.beat_schedule = {
        "every10": {"task": "a", "schedule": 10},
        "nightly": {"task": "b", "schedule": crontab(hour=3, minute=0)},
    }
    interval, nightly = beat_entries(app, "t", 100)
    last = stamp("2026-12-07T12:00:00")
    assert interval.next_run(last) == last + 10
    assert nightly.next_run(last) == stamp("2026-12-08T03:00:00")
    # A run at 03:00 expects the next one a day later: the crontab's period around now.
    assert nightly.next_run(stamp("2026-12-08T03:00:00")) == stamp("2026-12-09T03:00:00")


def test_more_scheduled_tasks_than_max_task_names_is_refused() -> None:
    app = Celery("t", broker="memory://")
    app.conf.beat_schedule = {f"e{i}": {"task": f"t{i}", "schedule": 5} for i in range(3)}
    with pytest.raises(ConfigError, match="more than --max-task-names 2"):
        beat_entries(app, "t", 2)


def overdue(collector: BeatCollector) -> dict[str, float]:
    families = {f.name: f for f in collector.families()}
    samples = families["celery_beat_entry_overdue_seconds"].samples
    return {labels[0]: value for labels, value in samples}


def test_overdue_counts_from_the_exporter_start_then_from_the_last_run() -> None:
    app = Celery("t", broker="memory://")
    app.conf.beat_schedule = {
        "tick": {"task": "job.tick", "schedule": 2},
        "other": {"task": "job.other", "schedule": 60},
    }
    entries = beat_entries(app, "t", 100)
    now = [1000.0]
    tracker = Tracker(
        Config(broker_url="memory://"), lambda: now[0], beat_tasks=["job.tick", "job.other"]
    )
    collector = BeatCollector(tracker, entries, FamilyFactory(), lambda: now[0], 1000.0)
    # No run seen yet: nothing is due before one period after the start (no page at start).
    now[0] = 1001.5
    assert overdue(collector) == {"tick": 0.0, "other": 0.0}
    now[0] = 1005.0
    assert overdue(collector) == {"tick": 3.0, "other": 0.0}
    # A run (task-sent) at 1004.5 makes it due at 1006.5.
    tracker.record_message(sent("u1", "job.tick", 1004.5))
    assert overdue(collector) == {"tick": 0.0, "other": 0.0}
    now[0] = 1010.0
    assert overdue(collector)["tick"] == pytest.approx(3.5)
    # A task of any other name is not a run.
    tracker.record_message(sent("u2", "job.unrelated", 1009.0))
    assert overdue(collector)["tick"] == pytest.approx(3.5)
    # Without task-sent events, a worker receiving it is a run.
    tracker.record_message(received("u3", "job.other", 1009.5))
    now[0] = 1080.0
    assert overdue(collector) == {"tick": pytest.approx(73.5), "other": pytest.approx(10.5)}
