"""FFRecord: HFAI's dataset file format, byte-compatible with the official ``ffrecord`` library.

Layer 1 of the runtime: numpy, tqdm and :mod:`hfai_runtime.checksum`'s CRC only (no torch, no
detectron2). The API and names are the official ones::

    with FileWriter("train.ffr", n) as w:          # atomic: renamed into place on close
        for sample in samples:
            w.write_one(sample)
    with FileReader("train.ffr") as r:             # or a directory of *.ffr, or a list
        first, batch = r.read_one(0), r.read([3, 1, 4])

    pack_folder("datasets/coco", "coco.ffr", verbose=True)   # and its index, coco.ffr.idx
    with PackedFolder("coco.ffr") as pf:
        pf.list("train2017")[:3], pf.read_one("train2017/000000000009.jpg")

Where the official library executes the pickle in a packed folder, leaves partial files, or
keeps a ~200 MB Python index per DataLoader worker (ImageNet), this one does not; see each module.
"""

from .errors import (
    CorruptFileError,
    FFRecordError,
    IndexWarning,
    NotAPackedFolderError,
    OldFormatWarning,
    SampleChecksumError,
    SampleCountError,
    UnsafeMetadataError,
)
from .pack import pack_folder
from .packed_folder import PackedFolder
from .reader import FileReader
from .sidecar import index_if_missing, write_index
from .writer import FileWriter

__all__ = [
    "FileWriter",
    "FileReader",
    "PackedFolder",
    "pack_folder",
    "write_index",
    "index_if_missing",
    "FFRecordError",
    "CorruptFileError",
    "SampleChecksumError",
    "UnsafeMetadataError",
    "NotAPackedFolderError",
    "SampleCountError",
    "OldFormatWarning",
    "IndexWarning",
]
