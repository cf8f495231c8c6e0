"""cellkit: image-based drug profiling on the scverse stack.

``import cellkit as ck`` then ``ck.io``, ``ck.datasets``, ``ck.pp``, ``ck.tl``, ``ck.pl``.
Submodules are imported lazily so that ``cellkit --version`` stays fast.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"io", "datasets", "segment", "extract", "features", "models", "get", "pp", "tl", "pl", "workflows"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"cellkit.{name}")
    raise AttributeError(f"module 'cellkit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
