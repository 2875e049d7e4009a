"""Structured records the runtime writes into a pod's log, for tools that read logs.

A log line is not an API: the local runner, ``hfai-runtime job`` and the benchmarks must not
parse human sentences. The runtime therefore writes, next to its human message, one line per
event of the form::

    hfai-record {"kind": "suspended", "iteration": 13, "rank": 0, ...}

The prefix may appear anywhere in a line (a logger's prefix before it does not matter); the rest
of the line is one JSON object. :func:`format_record` writes such a line, :func:`parse_record`
reads one back. Both sides import this module, so the format lives in one place.

Layer: none below it; imports only the standard library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

#: Marks a structured record in a log line.
PREFIX = "hfai-record "


class RecordKind(str, Enum):
    """What a record reports."""

    #: Training (re)starts; ``iteration`` is the first iteration this attempt runs.
    TRAINING_STARTED = "training_started"
    #: A step finished; ``iteration``, optionally ``max_iter`` and ``loss``.
    PROGRESS = "progress"
    #: Every rank agreed to stop; ``iteration`` is the last one trained, ``exit_code`` the code
    #: the process exits with, ``checkpoint`` the file written.
    SUSPENDED = "suspended"
    #: The first step of an attempt finished: ``iteration``, ``rank``, and when the process
    #: passed each step of its start (:mod:`hfai_runtime.startup`, wall-clock seconds).
    STARTUP = "startup"
    #: The runtime's restart limits ended the job at this start (max_preemptions, crash loop):
    #: ``iteration`` it would have resumed from, ``exit_code`` (permanent), ``reason``.
    STOPPED = "stopped"


@dataclass(frozen=True)
class Record:
    """One structured record: its kind and its fields (``iteration`` and others)."""

    kind: RecordKind
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def iteration(self) -> int | None:
        value = self.fields.get("iteration")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def format_record(kind: RecordKind, **fields: Any) -> str:
    """The log line for one record (no trailing newline)."""
    return PREFIX + json.dumps({"kind": RecordKind(kind).value, **fields}, sort_keys=True)


def parse_record(line: str) -> Record | None:
    """The record in ``line``, or ``None`` when the line holds none (or a malformed one)."""
    at = line.find(PREFIX)
    if at < 0:
        return None
    try:
        data = json.loads(line[at + len(PREFIX) :])
        kind = RecordKind(data.pop("kind"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return Record(kind, data)
