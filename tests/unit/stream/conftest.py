"""Fixtures shared by the event readers' unit tests."""

from collections.abc import Iterator

import pytest
from kombu.connection import Connection


@pytest.fixture
def conn() -> Iterator[Connection]:
    connection = Connection("memory://")
    try:
        yield connection
    finally:
        connection.release()
