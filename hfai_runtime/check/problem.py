"""What a check reports: one :class:`Problem` per refused field, named by its path.

Also the tolerant readers the rules use on documents whose schema may be wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hfai_runtime.check.rules import refused

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Problem:
    """One thing a cluster would refuse (or this project's policy rejects), at one field.

    ``field`` is a dotted path into the manifest (``spec.pytorchReplicaSpecs.Worker.replicas``;
    list items as ``containers[0]``, keys that are not plain words as ``limits[nvidia.com/gpu]``),
    ``rule`` a short id of the rule that refuses it (``kubelet/run-as-non-root``), ``source`` the
    file (and document number when the file holds several).
    """

    field: str
    message: str
    rule: str
    source: str = "<manifest>"

    @property
    def cluster_refuses(self) -> bool:
        """Whether a cluster refuses this (``False`` for this project's own advice, ``qos/*``:
        a BestEffort pod is admitted, it is only evicted first): see :data:`.rules.RULES`."""
        return refused(self.rule)

    def __str__(self) -> str:
        """One line, whatever keys or values the manifest holds."""
        line = f"{self.source}: {self.field or '<document>'}: {self.message}"
        return line.replace("\r", "\\r").replace("\n", "\\n")


def child(path: str, key: str | int) -> str:
    """``path`` extended by a map key or list index, written as :class:`Problem` documents."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = str(key)
    if not _PLAIN_KEY.match(key):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def as_dict(value: Any) -> dict:
    """``value`` if it is a mapping, else ``{}``: rules read documents whose schema may be wrong
    (that is reported once, by the schema check) without failing on them."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    """``value`` if it is a list, else ``[]`` (see :func:`as_dict`)."""
    return value if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """``value`` if it is a string (a name, say), else ``None`` (see :func:`as_dict`)."""
    return value if isinstance(value, str) else None


def dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or ``None`` where a level is missing or not a mapping."""
    for key in keys:
        value = as_dict(value).get(key)
    return value
