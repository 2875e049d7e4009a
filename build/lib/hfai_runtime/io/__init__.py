"""iopath glue over FFRecord packs (layer 2): imports iopath and the format, never detectron2.

* :class:`FFRecordPathHandler` -- ``ffrecord://<prefix>/<path>`` for any number of packs.
* :class:`PackMountPathHandler` -- a pack standing in for the local folder it sits in.
"""

from .handler import SCHEME, FFRecordPathHandler
from .mount import PackMountPathHandler

__all__ = ["SCHEME", "FFRecordPathHandler", "PackMountPathHandler"]
