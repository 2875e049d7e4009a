"""``Reopenable``: the context-manager and pickle protocol shared by the ffrecord readers."""

from __future__ import annotations

from typing import ClassVar, TypeVar

_R = TypeVar("_R", bound="Reopenable")


class Reopenable:
    """A reader that holds open mappings, built by ``_open()`` from a few plain attributes.

    It pickles as just those attributes (``_STATE``: file names and flags) and the copy calls
    ``_open()`` again. That is what a spawned DataLoader worker needs: it unpickles the reader
    and maps the files itself, since nothing mapped can cross a pickle, and the blob stays a few
    hundred bytes however large the dataset. ``with`` closes it.
    """

    _STATE: ClassVar[tuple[str, ...]]  # the attributes ``_open()`` rebuilds everything from

    def _open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {name: getattr(self, name) for name in self._STATE}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()
