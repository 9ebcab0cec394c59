"""The hot-path decoder: orjson's speed without its strictness costing good events."""

from __future__ import annotations

import pytest

from celery_exporter.stream import json_decode


def test_orjson_is_the_fast_path_here() -> None:
    assert json_decode.FAST  # orjson is a dependency: the benchmark numbers assume it


def test_a_lone_surrogate_costs_only_its_own_event() -> None:
    batch = b'[{"type": "task-started", "name": "bad\\ud800"}, {"type": "task-started"}]'
    events = json_decode.loads(batch)
    assert len(events) == 2 and events[1] == {"type": "task-started"}


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b"\xff\xfe"])
def test_what_is_not_json_raises_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        json_decode.loads(body)
