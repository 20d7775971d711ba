"""Shared fixtures for the imaging I/O tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _few_threads() -> Iterator[None]:
    """Keep numeric libraries to one thread (the CI machine has 2 shared cores)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - the I/O tests do not need torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
