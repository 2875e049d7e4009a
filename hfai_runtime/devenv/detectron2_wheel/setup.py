"""Replacement setup.py for detectron2's sources (the PyPI sdist ``pb1-detectron2==0.6``, or a
main checkout prepared by build.py): a pure-Python wheel.

The sdist's own setup.py cannot work: it compiles ``detectron2/layers/csrc``, which the sdist
does not contain, and its ``package_data`` glob looks for ``configs/`` at the sdist root while
the 128 model-zoo configs sit in ``detectron2/model_zoo/configs``. This file is copied over it
by ``hfai_runtime/devenv/detectron2_wheel/build.py``, which names the version in ``D2_WHEEL_VERSION``; it
imports nothing but the standard library and setuptools.
"""

import os

from setuptools import find_packages, setup

VERSION = os.environ.get("D2_WHEEL_VERSION", "0.6")
# The sdist carries these projects; a main source archive has no top-level projects/ folder.
PROJECTS = {
    package: folder
    for package, folder in {
        "detectron2.projects.point_rend": "projects/PointRend/point_rend",
        "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
        "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
    }.items()
    if os.path.isdir(folder)
}
# What main (0.6+<commit>) imports beyond 0.6, as its setup.py declares: packaging
# (utils/torch_version_utils.py) and black (LazyConfig.to_py only).
AFTER_0_6 = [] if VERSION == "0.6" else ["packaging", "black"]

setup(
    name="detectron2",
    version=VERSION,
    author="FAIR",
    url="https://github.com/facebookresearch/detectron2",
    description=f"detectron2 {VERSION}, pure-Python CPU build (compiled ops raise a clear error)",
    packages=find_packages(exclude=("configs", "tests*", "tools*", "projects*")) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.8",
    install_requires=[
        "Pillow>=7.1,<10",  # detectron2 0.6 uses Image.LINEAR, removed in Pillow 10
        "matplotlib",
        "pycocotools>=2.0.2",
        "opencv-python-headless",  # data/transforms/transform.py imports cv2
        "termcolor>=1.1",
        "yacs>=0.1.8",
        "tabulate",
        "cloudpickle",
        "tqdm>4.29.0",
        "tensorboard",
        "fvcore==0.1.5.post20221221",  # the last fvcore release; 0.6 pins <0.1.6
        "iopath==0.1.9",  # 0.6 pins <0.1.10; fvcore 0.1.5 needs 0.1.7+
        "omegaconf>=2.1",
        "hydra-core>=1.1",
        "setuptools<82",  # detectron2 imports pkg_resources, which setuptools 82 removed
        *AFTER_0_6,
    ],
)
