"""Fixtures of the scale-out tests: one private RabbitMQ per test module (it boots in ~5-11 s here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.scale.broker import RabbitBroker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitBroker]:
    b = RabbitBroker(tmp_path_factory.mktemp("rabbitmq"))
    b.start()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s
