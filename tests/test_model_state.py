"""Model attributes outside ``state_dict``, in one process: numbers that change during training
are saved and restored, anything else that changes is named in a warning, nn.Module's own
bookkeeping (``training``) is ignored. (Per-rank saving over 2 ranks: test_resume_matrix.py.)"""

from __future__ import annotations

import logging

import pytest
import torch
from detectron2.modeling.meta_arch.dense_detector import DenseDetector

from hfai_runtime.detectron2.model_state import AttributeState

pytestmark = pytest.mark.detectron2  # also run against detectron2 main (make test)


class Head(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)
        self.cache = []  # rebound every step: changed state that cannot be saved as a number
        self.scale = 2.0  # a constant: never saved

    def step(self, value: float) -> None:
        # What detectron2's DenseDetector._ema_update does (dense_detector.py@v0.6), called the
        # same way so that a change of its behaviour upstream shows here too.
        DenseDetector._ema_update(self, "loss_normalizer", value, 100)
        self.cache = [value]


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = Head()


def _train(state: AttributeState, model: Model, values: list[float]) -> None:
    for value in values:
        model.head.step(value)
        model.eval()
        model.train()  # an evaluation in between: `training` flips, it is not state
        state.after_step()


def test_changed_numbers_are_saved_and_restored(caplog):
    model, state = Model(), AttributeState()
    state.start(model)
    _train(state, model, [10.0, 20.0])
    caplog.set_level(logging.WARNING)
    saved = state.state_dict()
    assert saved == {"per_rank": [{"head.loss_normalizer": model.head.loss_normalizer}]}
    assert model.head.loss_normalizer != 100  # it moved: the saved value is not the initial one

    resumed, resumed_state = Model(), AttributeState()
    resumed_state.load_state_dict(saved, resumed)
    assert resumed.head.loss_normalizer == model.head.loss_normalizer
    resumed_state.start(resumed)
    _train(resumed_state, resumed, [30.0])
    _train(state, model, [30.0])
    assert resumed.head.loss_normalizer == model.head.loss_normalizer


def test_changed_state_that_is_not_saved_is_named_in_a_warning(caplog):
    model, state = Model(), AttributeState()
    state.start(model)
    _train(state, model, [10.0])
    caplog.set_level(logging.WARNING)
    state.state_dict()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    named = warnings[0].split(": ", 1)[1].split(". ", 1)[0]  # the list between ": " and ". "
    assert named == "head.cache (list)"


def test_a_model_without_such_state_saves_nothing():
    model, state = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)), AttributeState()
    state.start(model)
    model(torch.ones(3, 2)).sum().backward()
    state.after_step()
    assert state.state_dict() == {}
