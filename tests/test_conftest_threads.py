"""tests/conftest.py reads OMP_NUM_THREADS defensively: any value the OpenMP spec allows imports."""

from __future__ import annotations

import pytest
from conftest import threads_from_env


@pytest.mark.parametrize(
    ("value", "threads"),
    [(None, 1), ("", 1), ("2", 2), (" 3 ", 3), ("4,2", 4), ("0", 1), ("0,2", 1), ("x", 1), ("-2", 1)],
)
def test_threads_from_env(value, threads):
    assert threads_from_env(value) == threads
