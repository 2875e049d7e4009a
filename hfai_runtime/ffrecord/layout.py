"""The FFRecord byte layout, in one place (described in tests/data/ffrecord/README.md).

========  ============  =========================================================
offset    type          field
========  ============  =========================================================
0         uint32        ``meta_crc``: CRC-32 of bytes ``[4, 12 + 12 N)``
4         int64         ``N``, the number of samples
12        uint32[N]     CRC-32 of each sample (``zlib.crc32``; 0 for an empty one)
12 + 4N   int64[N]      absolute file offset of each sample's first byte
12 + 12N  bytes         the samples back to back; the last one runs to end of file
========  ============  =========================================================

All integers are little-endian. ``meta_crc == 0`` marks an old-format file whose header cannot
be verified. A file with no samples is exactly 12 bytes.
"""

from __future__ import annotations

import struct

import numpy as np

# ISA-L's CRC-32 (zlib's polynomial and values, several times its speed): the reader's bottleneck.
from hfai_runtime.checksum import crc32

__all__ = ["FIXED", "CRC_DTYPE", "OFFSET_DTYPE", "crc32", "header_size", "encode_header"]

FIXED = struct.Struct("<Iq")  # meta_crc, N
CRC_DTYPE = np.dtype("<u4")
OFFSET_DTYPE = np.dtype("<i8")


def header_size(n: int) -> int:
    """Bytes before the first sample of a file holding ``n`` samples."""
    return FIXED.size + (CRC_DTYPE.itemsize + OFFSET_DTYPE.itemsize) * n


def encode_header(crcs: np.ndarray, lengths: np.ndarray) -> bytes:
    """The complete header for samples with these CRCs and byte lengths, ``meta_crc`` included."""
    n = len(crcs)
    offsets = np.empty(n, OFFSET_DTYPE)
    if n:
        offsets[0] = header_size(n)
        np.cumsum(lengths[:-1], out=offsets[1:])
        offsets[1:] += header_size(n)
    body = struct.pack("<q", n) + crcs.astype(CRC_DTYPE).tobytes() + offsets.tobytes()
    return struct.pack("<I", crc32(body)) + body
