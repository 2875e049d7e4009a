"""SIGKILL of the checkpointing process at random moments during saves: ``last_checkpoint``
always names a complete checkpoint, and no file under a final name is ever partial."""

from __future__ import annotations

import multiprocessing
import random
import time

import _dist_saver
import pytest
import torch
from _dist_util import wait_for

from hfai_runtime.atomic import is_temporary

pytestmark = pytest.mark.detectron2  # also run against detectron2 main (make test)

KILLS_DURING_SAVE = 20  # kills that must land while a checkpoint is being written
MAX_TRIALS = 60


def _named_iteration(save_dir) -> int:
    """The iteration in the name ``last_checkpoint`` holds (-1 when there is none yet)."""
    path = save_dir / "last_checkpoint"
    return int(path.read_text()[len("model_") : -len(".pth")]) if path.exists() else -1


def _check_complete(path) -> int:
    """Load like detectron2's resume does; every weight must be the file's own iteration."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    weight = checkpoint["model"]["weight"]
    assert path.name == f"model_{checkpoint['iteration']:07d}.pth"
    assert weight.numel() == _dist_saver.MEGABYTES << 18
    assert weight[0] == weight[-1] == checkpoint["iteration"], f"{path.name} holds another save's weights"
    return checkpoint["iteration"]


def test_sigkill_during_save_leaves_a_loadable_last_checkpoint(tmp_path):
    # forkserver: each saver is a cheap fork of a clean process that has imported torch and
    # detectron2 (by installed module names: the fork server does not see the tests folder).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["detectron2.checkpoint", "hfai_runtime.detectron2.atomic_checkpointer"])
    rng = random.Random()
    during_save = trials = 0
    while during_save < KILLS_DURING_SAVE:
        trials += 1
        assert trials <= MAX_TRIALS, f"only {during_save} of {trials} kills landed during a save"
        first = trials * 1000
        saver = context.Process(target=_dist_saver.save_forever, args=(str(tmp_path), first), daemon=True)
        saver.start()
        # Once this saver's first save is complete, kill it somewhere in the next saves.
        wait_for(lambda first=first: _named_iteration(tmp_path) >= first, 60, "the saver's first save")
        time.sleep(rng.uniform(0.0, 0.8))
        saver.kill()
        saver.join()
        during_save += any(is_temporary(p.name) for p in tmp_path.iterdir())  # a killed save's

        last = _named_iteration(tmp_path)
        assert last >= first
        assert _check_complete(tmp_path / f"model_{last:07d}.pth") == last
        for path in tmp_path.glob("model_*.pth"):  # nothing partial under a final name either
            if path.name != f"model_{last:07d}.pth":
                _check_complete(path)
                path.unlink()  # keep the disk use bounded
