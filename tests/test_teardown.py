"""`end_process_group`: gloo's threads end when the run ends, not at interpreter exit (where they could abort a run
that finished with exit -6). A one-process gloo group here; `test_trl.py`'s torchrun test checks two processes with
the DDP wrapper a trainer holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from vdtrain.training.teardown import end_process_group, forget_group_defaults

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")


def _gloo_threads() -> int:
    return sum("gloo" in Path(task, "comm").read_text() for task in Path("/proc/self/task").iterdir())


def test_threads_end_when_a_default_held_the_group():
    before = _gloo_threads()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:

        def collective(tensor, group=dist.group.WORLD):  # as torch.distributed.nn.functional imported late
            return tensor

        tensor = torch.ones(3)
        dist.all_reduce(tensor, group=collective.__defaults__[0])
        assert tensor.tolist() == [1.0, 1.0, 1.0]
        assert _gloo_threads() > before  # the worker that ran the all-reduce has named itself by now
    finally:
        end_process_group()
    assert not dist.is_initialized()
    assert collective.__defaults__ == (None,)  # the default group, which is what `group.WORLD` meant
    assert _gloo_threads() == before  # the group was freed and its threads joined, here (not at exit)


def test_forget_group_defaults_touches_only_process_groups():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    group = dist.group.WORLD

    def keyword_only(*, group=group, op="sum"):
        return op

    def positional(tensor, op="sum", group=group, size=3):
        return size

    dist.destroy_process_group()
    del group
    assert forget_group_defaults() >= 2
    assert keyword_only.__kwdefaults__ == {"group": None, "op": "sum"}
    assert positional.__defaults__ == ("sum", None, 3)
    assert forget_group_defaults() == 0  # nothing left to replace
