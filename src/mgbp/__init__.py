"""mgbp: Multi-Grid Back-Projection super-resolution (Navarrete Michelini et al.).

Public API (imported lazily so that `import mgbp` stays light):
- `mgbp.imresize`: MATLAB-exact bicubic resize (`mgbp.resize`).
- `mgbp.load_model`: rebuild a generator from a weight file or a shipped name (`mgbp.models`).
- `mgbp.upscale`: upscale numpy arrays, PIL images or tensors (`mgbp.inference`).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "imresize": "mgbp.resize",
    "load_model": "mgbp.models",
    "upscale": "mgbp.inference",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mgbp' has no attribute {name!r}")


__all__ = list(_LAZY)
