"""Publishing deliver tasks: how a fan-out is cut into tasks."""

from __future__ import annotations

import pytest

from dispatcher.publish import batch_size_for


@pytest.mark.parametrize("count, size", [(1, 20), (100, 20), (2000, 32), (100_000, 500)])
def test_fan_outs_are_cut_into_many_tasks_of_bounded_size(count, size):
    assert batch_size_for(count) == size
