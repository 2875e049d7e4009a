"""Checks of command-line values that argparse's types cannot express, made before a command
does anything, each returning one line (the flag, the value, what was expected) or ``None``.

They run in the command rather than as argparse types so a refusal is one line on stderr (the
command's own prefix) and exit 2, without argparse's usage block.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def seconds_problem(flag: str, value: float | None, positive: bool = False) -> str | None:
    """``value`` must be a finite number of seconds, 0 or more (more than 0 with ``positive``):
    ``nan`` or ``inf`` would make a wait never end (or a sleep raise), a negative one is
    meaningless."""
    if value is None or (math.isfinite(value) and (value > 0 or (value == 0 and not positive))):
        return None
    bound = "more than 0" if positive else "0 or more"
    return f"{flag}: expected a finite number of seconds, {bound}; got {value!r}"


def output_file_problem(flag: str, path: Path | None) -> str | None:
    """``path`` must be writable as a file: its folder exists, and it is not a folder itself
    (checked before the command runs, so a long run does not end in a traceback)."""
    if path is None:
        return None
    if os.path.isdir(path):
        return f"{flag} {path}: is a folder; expected a file name"
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return f"{flag} {path}: its folder {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"{flag} {path}: its folder {folder} is not writable"
    return None
