"""Where ``launch_from_env`` used to live; it is :mod:`hfai_runtime.detectron2.launch` now.

Kept importable so that projects generated before the move (``from hfai_runtime.launch import
launch_from_env`` in their ``train_net.py``) keep working.
"""

from hfai_runtime.detectron2.launch import launch_from_env

__all__ = ["launch_from_env"]
