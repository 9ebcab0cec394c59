"""The paired drain benchmark's pure parts (bench.paired): the drain order of each round and
the statistics of per-round ratios; and its options as the runner parses them (bench.run)."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import pytest

from bench.consumers import CLOCK_TICKS
from bench.paired import (
    Report,
    Round,
    Settings,
    best_floor,
    columns,
    cpu_ratio,
    machine_cpu,
    pairs,
    rate_ratio,
    render_table,
    rotation,
    round_ratios,
    spread,
)
from bench.phases import DrainResult
from bench.run import paired_settings, parse_args

KINDS = ("floor", "baseline", "before", "exporter")


def drained(rate: float, cpu_us: float, events: int = 300_000) -> DrainResult:
    return DrainResult(
        events=events,
        seconds=events / rate,
        rate=rate,
        cpu_us_per_event=cpu_us,
        lost=0,
        build_seconds=2.0,
        scrape_p50=0.01,
        scrape_p99=0.02,
    )


def rounds_of(rates: dict[str, list[float]], cpus: dict[str, list[float]]) -> list[Round]:
    count = len(next(iter(rates.values())))
    return [
        Round(
            order=rotation(list(rates), n),
            build_seconds=2.0,
            drains={k: drained(rates[k][n], cpus[k][n]) for k in rates},
        )
        for n in range(count)
    ]


def test_the_first_round_drains_in_the_given_order() -> None:
    assert rotation(KINDS, 0) == list(KINDS)


def test_over_as_many_rounds_as_contenders_each_drains_once_in_every_position() -> None:
    orders = [rotation(KINDS, n) for n in range(len(KINDS))]
    for position in range(len(KINDS)):
        assert sorted(order[position] for order in orders) == sorted(KINDS)
    assert all(sorted(order) == sorted(KINDS) for order in orders)


def test_the_order_changes_every_round_and_wraps_around() -> None:
    orders = [tuple(rotation(KINDS, n)) for n in range(9)]
    assert all(a != b for a, b in itertools.pairwise(orders))
    assert orders[len(KINDS)] == orders[0]
    # five rounds of four: every contender is first once and last once (one of them twice)
    firsts = Counter(order[0] for order in orders[:5])
    lasts = Counter(order[-1] for order in orders[:5])
    assert set(firsts) == set(KINDS) == set(lasts)
    assert max(firsts.values()) == 2


def test_every_contender_is_compared_to_the_floor_and_non_references_to_the_baseline() -> None:
    assert pairs(KINDS) == [
        ("baseline", "floor"),
        ("before", "floor"),
        ("exporter", "floor"),
        ("before", "baseline"),
        ("exporter", "baseline"),
    ]
    assert pairs(("baseline", "exporter")) == [("exporter", "baseline")]
    assert pairs(("exporter", "floor")) == [("exporter", "floor")]
    assert pairs(("before", "exporter")) == []


def test_spread_is_median_and_range_of_finite_values() -> None:
    assert spread([0.9, 0.5, 0.8]) == spread([0.5, 0.8, 0.9])
    got = spread([0.9, 0.5, 0.8, math.nan])
    assert (got.median, got.low, got.high, got.rounds) == (0.8, 0.5, 0.9, 3)
    assert spread([0.6, 0.8]).median == pytest.approx(0.7)
    assert math.isnan(spread([]).median)
    assert spread([]).rounds == 0


def test_ratios_are_speeds_by_rate_and_by_cpu() -> None:
    assert rate_ratio(80_000, 100_000) == pytest.approx(0.8)
    # 4 µs against the reference's 3.2 µs: 0.8x as many events per CPU second
    assert cpu_ratio(4.0, 3.2) == pytest.approx(0.8)
    assert math.isnan(rate_ratio(1.0, 0.0))
    assert math.isnan(cpu_ratio(0.0, 3.0))


def test_ratios_are_taken_per_round_and_the_median_is_of_those() -> None:
    # The floor's rate moves between rounds and the exporter's moves with it: per round the
    # exporter is 0.9x, 0.5x, 0.8x (median 0.8x); the ratio of medians would say 0.5x.
    rounds = rounds_of(
        {"floor": [100.0, 200.0, 300.0], "exporter": [90.0, 100.0, 240.0]},
        {"floor": [3.0, 3.0, 2.0], "exporter": [5.0, 6.0, 2.5]},
    )
    rates, cpus = round_ratios(rounds, "exporter", "floor")
    assert rates == pytest.approx([0.9, 0.5, 0.8])
    assert cpus == pytest.approx([0.6, 0.5, 0.8])
    assert spread(rates).median == pytest.approx(0.8)
    table = render_table(Report(Settings(("floor", "exporter"), 300_000, 3, 5.0, 2, 60.0), rounds))
    lines = table.splitlines()
    median = next(line for line in lines if line.startswith("| median"))
    assert "**0.80x** (0.60x)" in median
    assert "200/s (3.0 µs)" in median  # the floor's own median
    assert "0.50-0.90x (0.50-0.80x)" in next(line for line in lines if line.startswith("| min"))
    assert "| 2 " in table and "exporter, floor" in table  # round 2 drained in rotated order
    assert "| 2.0s " in table  # how long its backlog took to build


def test_rounds_without_both_contenders_are_left_out_of_their_ratio() -> None:
    rounds = rounds_of({"floor": [100.0, 200.0], "exporter": [50.0, 180.0]}, {
        "floor": [3.0, 3.0], "exporter": [6.0, 4.0]
    })  # fmt: skip
    del rounds[0].drains["exporter"]
    rates, _ = round_ratios(rounds, "exporter", "floor")
    assert rates == pytest.approx([0.9])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--consumers", "floor,nope"], "unknown consumer 'nope'"),
        (["--consumers", "exporter"], "at least two different consumers"),
        (["--consumers", "floor,floor"], "at least two different consumers"),
        (["--consumers", "floor,before"], "consumer `before` needs --before-src"),
        (["--rounds", "0"], "must be at least 1"),
    ],
)
def test_bad_arguments_give_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["paired", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_before_src_must_hold_the_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["paired", "--consumers", "floor,before", "--before-src", str(tmp_path)])
    assert "no celery_exporter package" in capsys.readouterr().err
    (tmp_path / "celery_exporter").mkdir()
    argv = ["paired", "--consumers", "floor,before", "--before-src", str(tmp_path)]
    got = paired_settings(parse_args(argv))
    assert got.consumers == ("floor", "before")
    assert (got.events, got.rounds) == (300_000, 5)


def test_machine_cpu_counts_busy_and_stolen_time_from_proc_stat() -> None:
    stat = "cpu  1000 50 200 4000 70 10 20 300 0 0\ncpu0 500 25 100 2000 35 5 10 150 0 0\n"
    busy, steal = machine_cpu(stat)
    # user + nice + system + irq + softirq; idle and iowait are not busy
    assert busy == pytest.approx(1280 / CLOCK_TICKS)
    assert steal == pytest.approx(300 / CLOCK_TICKS)


def test_the_floor_is_the_faster_of_both_readers_in_each_round() -> None:
    # Round 1: the socket reader wins; round 2: read_response does. Ratios follow the winner.
    rounds = []
    for read, socket, exporter in ((100.0, 150.0, 120.0), (200.0, 160.0, 100.0)):
        drains = {
            "floor": drained(read, 5.0),
            "floor-socket": drained(socket, 4.0),
            "exporter": drained(exporter, 6.0),
        }
        best_floor(drains)
        rounds.append(Round(["floor", "floor-socket", "exporter"], 2.0, drains))
    assert [r.drains["floor"].rate for r in rounds] == [150.0, 200.0]
    assert [r.drains["floor-read"].rate for r in rounds] == [100.0, 200.0]
    rates, _ = round_ratios(rounds, "exporter", "floor")
    assert rates == [0.8, 0.5]
    kinds = ("floor", "floor-socket", "exporter")
    assert columns(kinds) == ["floor", "floor-read", "floor-socket", "exporter"]
    table = render_table(Report(Settings(kinds, 300_000, 2, 5.0, 2, 60.0), rounds))
    assert "floor-read/floor" in table and "floor-socket/floor" in table  # both reported


def test_one_floor_reader_alone_is_the_floor() -> None:
    drains = {"floor": drained(100.0, 5.0), "exporter": drained(80.0, 6.0)}
    best_floor(drains)
    assert set(drains) == {"floor", "exporter"}
    assert columns(("floor", "exporter")) == ["floor", "exporter"]
    assert parse_args(["paired"]).consumers == ("floor", "floor-socket", "baseline", "exporter")
