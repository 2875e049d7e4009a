"""``FileReader``: random access to the samples of one or more FFRecord files.

Each file is memory-mapped read-only. A sample read is then one ``memcpy`` out of the page cache
into a fresh numpy array, with no system call: that saves about what the CRC check (ISA-L) costs,
so a verified read runs close to a bare ``os.pread`` loop (``python -m bench.ffrecord``). The
mapping is inherited by forked DataLoader workers as is (no file offsets to share, nothing to
reopen), and the CRC and offset tables of a single file are numpy views into it: a 1.2M-sample
header costs one private array of end offsets (8 bytes a sample), shared by forked workers.

Two consequences of mapping: the file must not be truncated *in place* while a reader has it open
(a read past the new end would be a SIGBUS; :class:`~hfai_runtime.ffrecord.FileWriter` replaces
files by rename, which is safe), and the pages a process reads count in its RSS as shared file
pages, exactly the page cache that ``pread`` would have filled. A file that cannot be mapped is
read with ``os.pread`` instead, with the same results.
"""

from __future__ import annotations

import hashlib
import mmap
import operator
import os
import sys
import warnings
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

import numpy as np

from .errors import CorruptFileError, FFRecordError, OldFormatWarning, SampleChecksumError
from .files import open_regular
from .layout import CRC_DTYPE, FIXED, OFFSET_DTYPE, crc32, header_size
from .reopen import Reopenable

PathLike = Union[str, "os.PathLike[str]"]


def resolve_files(fname: PathLike | Sequence[PathLike]) -> list[str]:
    """The files a reader covers: a file, every ``*.ffr`` of a directory (sorted), or a list."""
    if isinstance(fname, (str, os.PathLike)):
        path = Path(fname)
        if path.is_dir():
            files = sorted(str(p) for p in path.glob("*.ffr"))
            if not files:
                raise FFRecordError(f"{path}: directory holds no *.ffr files")
            return files
        return [os.fspath(fname)]
    files = [os.fspath(f) for f in fname]
    if not files:
        raise FFRecordError("FileReader needs at least one file; got an empty list")
    return files


class _PreadBytes:
    """``data[a:b]`` read with ``os.pread`` into a fresh array: the fallback for a file that
    cannot be memory-mapped (a FUSE mount with direct I/O before Linux 6.6, for one). ``pread``
    takes no file position, so the descriptor is safe to share with forked workers."""

    def __init__(self, fd: int, fname: str, size: int) -> None:
        self.fd, self.fname, self.size = fd, fname, size

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.size)
        out = np.empty(max(stop - start, 0), np.uint8)
        if out.size and os.preadv(self.fd, [out], start) != out.size:
            raise CorruptFileError(f"{self.fname}: the file shrank below {stop} bytes while open")
        return out


class _SampleFile:
    """One FFRecord file, mapped (or read with pread), with its header validated. ``data`` is
    the file's bytes; ``crcs`` and ``offsets`` are the header tables (views into the map)."""

    def __init__(self, fname: str, check_data: bool) -> None:
        self.fname = fname
        fd, self.stat = open_regular(fname, "an FFRecord file must be one")
        try:
            self.size = self.stat.st_size
            if self.size < FIXED.size:
                raise CorruptFileError(
                    f"{fname}: {self.size} bytes is shorter than the {FIXED.size}-byte header"
                )
            try:
                self.map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                self.data = np.frombuffer(self.map, np.uint8)
            except OSError:
                self.map = None
                self.data = _PreadBytes(os.dup(fd), fname, self.size)
        finally:
            os.close(fd)
        try:
            self._read_header(check_data)
        except BaseException:
            self.close()
            raise

    def _read_header(self, check_data: bool) -> None:
        self.meta_crc, self.n = FIXED.unpack_from(self.data[: FIXED.size])
        self._check_header(self.meta_crc, check_data)
        tables = self.data[FIXED.size : header_size(self.n)]
        self.crcs = tables[: 4 * self.n].view(CRC_DTYPE)
        self.offsets = tables[4 * self.n :].view(OFFSET_DTYPE)
        self._check_offsets()
        if check_data and self.n:
            self._check_last_sample()

    def _check_header(self, meta_crc: int, check_data: bool) -> None:
        end = header_size(self.n) if self.n >= 0 else -1
        if self.n < 0 or end > self.size:
            raise CorruptFileError(
                f"{self.fname}: header declares {self.n} samples ({end} header bytes) "
                f"but the file has {self.size} bytes: truncated or not an FFRecord file"
            )
        if meta_crc == 0:
            warnings.warn(
                f"{self.fname}: metadata CRC is 0 (old-format ffrecord file); its header cannot be verified",
                OldFormatWarning,
                stacklevel=2,
            )
        elif check_data and crc32(self.data[4:end]) != meta_crc:
            raise CorruptFileError(
                f"{self.fname}: metadata checksum mismatch: the header "
                "(sample count, CRC or offset table) is damaged"
            )

    def _check_offsets(self) -> None:
        """Offsets must start after the header, never run backwards and stay inside the file."""
        if not self.n:
            return
        if self.offsets[0] < header_size(self.n):
            raise CorruptFileError(
                f"{self.fname}: sample 0 starts at {self.offsets[0]}, "
                f"inside the {header_size(self.n)}-byte header"
            )
        backwards = np.flatnonzero(self.offsets[1:] < self.offsets[:-1])
        if backwards.size:
            i = int(backwards[0]) + 1
            raise CorruptFileError(
                f"{self.fname}: offset of sample {i} ({self.offsets[i]}) is "
                f"before that of sample {i - 1} ({self.offsets[i - 1]})"
            )
        if self.offsets[-1] > self.size:
            raise CorruptFileError(
                f"{self.fname}: sample {self.n - 1} starts at {self.offsets[-1]}, past the end "
                f"of the {self.size}-byte file: truncated"
            )

    def _check_last_sample(self) -> None:
        """The last sample runs to end of file: its CRC is what reveals truncation or appending."""
        last = self.n - 1
        if crc32(self.data[self.offsets[last] :]) != self.crcs[last]:
            raise SampleChecksumError(
                f"{self.fname}: sample {last} (the last) fails its CRC check: the file is "
                f"truncated or was appended to ({self.size} bytes), or that sample is damaged",
                self.fname,
                [last],
            )

    def ends(self) -> np.ndarray:
        """Where each sample ends: the next one's offset, the end of the file for the last."""
        return np.append(self.offsets[1:], self.size)

    def close(self) -> None:
        if isinstance(self.data, _PreadBytes):
            os.close(self.data.fd)
        self.data = self.crcs = self.offsets = None  # drop the views before unmapping
        try:
            if self.map is not None:
                self.map.close()
        except BufferError:  # a caller still holds a view; the mapping goes with it
            pass


class FileReader(Reopenable):
    """Reads samples by global index from one FFRecord file, a directory of them, or a list.

    Samples of several files are numbered one file after the other (a directory's ``*.ffr``
    files in sorted name order). ``check_data`` verifies the header CRC, the offsets and the last
    sample (which reveals truncation) at open, and every sample's CRC on read. Readers can be
    used as context managers, survive ``fork`` unchanged, and pickle as their file names (the
    copy reopens the files).
    """

    _STATE = ("_fnames", "check_data")

    def __init__(self, fname: PathLike | Sequence[PathLike], check_data: bool = True) -> None:
        self._fnames = resolve_files(fname)
        self.check_data = check_data
        self._open()

    def _open(self) -> None:
        self._files = files = []
        try:
            for fname in self._fnames:
                files.append(_SampleFile(fname, self.check_data))
        except BaseException:
            self.close()
            raise
        self._first = np.cumsum([0] + [f.n for f in files[:-1]]).tolist()
        self.n = sum(f.n for f in files)
        if len(files) == 1:  # views into the map: no private copy of the tables
            f = files[0]  # (int64 offsets are 8-byte aligned only when N is odd)
            starts, crcs = np.require(f.offsets, np.int64, "A"), f.crcs
            ends = f.ends().astype(np.int64, copy=False)
        else:
            starts = np.concatenate([f.offsets for f in files]).astype(np.int64)
            crcs = np.concatenate([f.crcs for f in files]).astype(np.uint32)
            ends = np.concatenate([f.ends() for f in files]).astype(np.int64)
        self._crcs = crcs
        self._starts, self._ends = starts, ends
        # memoryviews index to plain ints several times faster than numpy scalars
        self._start_of, self._end_of, self._crc_of = (memoryview(starts), memoryview(ends), memoryview(crcs))
        self._data = [f.data for f in files]
        self._spares: list[np.ndarray] = []  # see _batch_buffer

    # -- reading ---------------------------------------------------------------------------

    def read_one(self, index: int) -> np.ndarray:
        """Sample ``index`` as a new writable 1-D ``uint8`` array."""
        i = operator.index(index)
        if not 0 <= i < self.n:
            raise self._index_error(i)
        part = bisect_right(self._first, i) - 1 if len(self._data) > 1 else 0
        sample = self._data[part][self._start_of[i] : self._end_of[i]].copy()
        if self.check_data and crc32(sample) != self._crc_of[i]:
            raise self._checksum_error([i])
        return sample

    def read(self, indices: Iterable[int]) -> list[np.ndarray]:
        """The samples at ``indices``, in that order: writable 1-D ``uint8`` views into one
        buffer (see :meth:`_batch_buffer`). One damaged sample fails the whole batch, naming
        every damaged sample in it."""
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if idx.size == 0:
            return []
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"indices must be integers, got {idx.dtype}")
        bad = np.flatnonzero((idx < 0) | (idx >= self.n))
        if bad.size:
            raise self._index_error(int(idx[bad[0]]))
        parts = np.searchsorted(self._first, idx, side="right") - 1
        starts, ends = self._starts[idx], self._ends[idx]
        data, check = self._data, self.check_data
        samples, bad, expected = [], [], self._crcs[idx].tolist()
        batch, used = self._batch_buffer(int((ends - starts).sum())), 0
        for i, p, s, e in zip(range(len(idx)), parts.tolist(), starts.tolist(), ends.tolist()):
            sample = batch[used : used + e - s]
            used += e - s
            sample[:] = data[p][s:e]
            if check and crc32(sample) != expected[i]:  # checked while still in cache
                bad.append(i)
            samples.append(sample)
        if bad:
            raise self._checksum_error(idx[bad].tolist())
        return samples

    def view(self, index: int) -> np.ndarray:
        """Sample ``index`` as a read-only array *into the mapping*: no copy, no private memory,
        shared with forked workers (a copy only for a file read with ``pread``). Checked
        against its CRC like :meth:`read_one` when ``check_data``."""
        i = operator.index(index)
        if not 0 <= i < self.n:
            raise self._index_error(i)
        part = bisect_right(self._first, i) - 1 if len(self._data) > 1 else 0
        sample = self._data[part][self._start_of[i] : self._end_of[i]]
        if self.check_data and crc32(sample) != self._crc_of[i]:
            raise self._checksum_error([i])
        return sample

    def _batch_buffer(self, nbytes: int) -> np.ndarray:
        """The buffer for a batch: the previous batch's once no sample of it is referenced any
        more (the usual case: a DataLoader's collate copies the samples), else a new one.

        Reusing it makes batched reads independent of the allocator: freeing a 16 MiB batch
        and allocating the next is, under a fixed ``mmap_threshold`` (a glibc tunable; the
        default threshold is dynamic), an ``munmap`` and a fresh mapping to fault in, or a heap
        trimmed and grown again, every batch. The check is CPython's reference count: nobody
        but this method can reach the buffer once its samples are gone, and ``list.pop`` hands
        it to one thread only."""
        try:
            spare = self._spares.pop()
        except IndexError:
            spare = None
        if spare is None or spare.size < nbytes or sys.getrefcount(spare) > 2:  # 2: spare, arg
            spare = np.empty(nbytes, np.uint8)
        self._spares.append(spare)
        return spare

    def sample_size(self, index: int) -> int:
        """Byte length of sample ``index``, without reading it."""
        i = operator.index(index)
        if not 0 <= i < self.n:
            raise self._index_error(i)
        return self._end_of[i] - self._start_of[i]

    def verify(self) -> list[int]:
        """Global indices of every sample whose CRC does not match (reads the whole dataset)."""
        bad = []
        for first, f in zip(self._first, self._files):
            spans = zip(f.offsets.tolist(), f.ends().tolist(), f.crcs.tolist())
            for i, (s, e, crc) in enumerate(spans):
                if crc32(f.data[s:e]) != crc:
                    bad.append(first + i)
        return bad

    def locate(self, index: int) -> tuple[str, int]:
        """The file holding global sample ``index``, and the sample's index within that file."""
        i = operator.index(index)
        if not 0 <= i < self.n:  # else a wrong file or a negative local index
            raise self._index_error(i)
        part = bisect_right(self._first, i) - 1
        return self._fnames[part], i - self._first[part]

    def _index_error(self, i: int) -> Exception:
        if not self._files:
            return ValueError(f"read from a closed FileReader of {self._fnames[0]}")
        where = self._fnames[0] if len(self._fnames) == 1 else f"{len(self._fnames)} files"
        return IndexError(f"sample index {i} out of range: {where} holds n={self.n} samples")

    def _checksum_error(self, indices: list[int]) -> SampleChecksumError:
        places = [self.locate(i) for i in indices]
        names = ", ".join(
            f"{i}" if len(self._fnames) == 1 else f"{i} ({f} sample {j})"
            for i, (f, j) in zip(indices, places)
        )
        fname = places[0][0]
        return SampleChecksumError(
            f"{fname}: CRC mismatch in sample {names}: the data is damaged", fname, indices
        )

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def fnames(self) -> list[str]:
        """The files read, in global index order."""
        return list(self._fnames)

    def content_ids(self) -> list[tuple[int, int, int]]:
        """Per file: its size, header CRC and sample count, which identify its contents
        wherever it is copied (the header CRC covers every sample's CRC)."""
        return [(f.size, f.meta_crc, f.n) for f in self._files]

    def fingerprint(self) -> str:
        """A hex digest naming the open files' identity and contents: per file its path,
        device, inode, size, change time (which no one can set back, unlike the mtime) and
        header CRC (which covers every sample's CRC). A file replaced by another, even one of
        the same size with its mtime restored, or rewritten in place, gets a new fingerprint."""
        key = repr(
            [
                (f.fname, f.stat.st_dev, f.stat.st_ino, f.size, f.stat.st_ctime_ns, f.meta_crc)
                for f in self._files
            ]
        )
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    def close(self) -> None:
        """Unmap the files. Reading afterwards raises; closing twice is harmless."""
        self._start_of = self._end_of = self._crc_of = None
        self._starts = self._ends = self._crcs = None
        self._spares = []
        self._data = []
        for f in self._files:
            f.close()
        self._files = []
        self.n = 0

    def __repr__(self) -> str:
        return f"FileReader({self._fnames!r}, n={self.n}, check_data={self.check_data})"
