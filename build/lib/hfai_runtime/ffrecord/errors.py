"""Exceptions raised by :mod:`hfai_runtime.ffrecord`.

Every message names the file and, where one is involved, the sample index or the packed path, so
a failing DataLoader worker points straight at the damaged data. All are ``ValueError``s (bad
data or bad arguments), except where Python has a more precise built-in: out-of-range indices
raise ``IndexError``, missing packed paths ``FileNotFoundError``.
"""

from __future__ import annotations


class FFRecordError(ValueError):
    """Base class: a file is not valid FFRecord data, or the API was used against its contract."""


class CorruptFileError(FFRecordError):
    """The header, the offset table or the packed-folder metadata is damaged or truncated."""


class SampleChecksumError(CorruptFileError):
    """A sample's bytes do not match the CRC-32 stored for it in the header."""

    def __init__(self, message: str, fname: str, indices: list[int]) -> None:
        super().__init__(message)
        self.fname = fname
        self.indices = indices


class UnsafeMetadataError(CorruptFileError):
    """Packed-folder metadata asks the unpickler for something other than plain containers.

    Refused before anything named in the file is looked up or run.
    """


class NotAPackedFolderError(FFRecordError):
    """The last sample of the file does not start with the packed-folder magic bytes."""


class SampleCountError(FFRecordError):
    """A :class:`~hfai_runtime.ffrecord.FileWriter` got more or fewer samples than declared."""


class OldFormatWarning(UserWarning):
    """The file's metadata CRC is 0 (written by an old ffrecord): its header cannot be verified."""
