"""Test helper: a process that saves big checkpoints through ``AtomicCheckpointer`` forever, to
be SIGKILLed at random moments (tests/test_suspend_atomic_save.py)."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from hfai_runtime.detectron2.atomic_checkpointer import AtomicCheckpointer

#: Checkpoint size: big enough that most of a save's time is spent writing.
MEGABYTES = 32


class Payload(torch.nn.Module):
    """A 'model' whose every weight equals the iteration it was saved at, so a checkpoint that
    loads but holds another save's bytes is caught too."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.from_numpy(np.zeros(MEGABYTES << 18, dtype=np.float32)))


def save_forever(save_dir: str, first_iteration: int) -> None:
    model = Payload()
    checkpointer = AtomicCheckpointer(model, save_dir, save_to_disk=True)
    for iteration in itertools.count(first_iteration):
        with torch.no_grad():
            model.weight.fill_(iteration)
        checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
