"""Test-environment shim, put on PYTHONPATH only when the template's tests run a generated project.

Why: this machine's detectron2 is the bootstrap's pure-Python build (no C++ sources exist on
PyPI), whose ``detectron2._C`` stand-in raises on every compiled symbol, including
``get_compiler_version``/``get_cuda_version``. detectron2's ``default_setup`` -- which the
generated ``train_net.py`` calls, as detectron2's own ``tools/train_net.py`` does -- logs
``collect_env_info()``, which calls both unconditionally. Real detectron2 (the CUDA image, or any
source build) has them. So here, and only for the stand-in, they report that nothing is compiled;
every real compiled op still raises. Patched lazily when ``detectron2._C`` is imported, so
processes that never import detectron2 (``hfai-runtime ffr pack``) do not import torch.
"""

import importlib.abc
import sys


class _PatchPurePythonC(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "detectron2._C":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(fullname)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return spec  # the real compiled extension: leave it alone
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            module.get_compiler_version = lambda: "not compiled (pure-Python detectron2 build)"
            module.get_cuda_version = lambda: "not compiled"
            module.has_cuda = lambda: False

        loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchPurePythonC())
