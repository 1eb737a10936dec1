"""The MGBP generators (Section III-A): MGBPv2 and MGBP-3D (Algorithm 1, Table I), MGBPv1 (Figure 3).

- `build_model(preset, **overrides)`: a fresh network of a preset of `PRESETS` (Table I and our own).
- `load_model(name_or_path, device=None)`: rebuild a network from a weight file alone (our safetensors,
  or the authors' PIRM-2018 `.model` files) or from a name in `SHIPPED`.
- `save_model(model, path, extra_metadata)`: safetensors with the config in the metadata.
"""

from mgbp.models.mgbpv2 import MGBPv2, MGBPv2Config
from mgbp.models.presets import PRESETS, build_model
from mgbp.models.weights import SHIPPED, default_model_for_scale, load_model, save_model

__all__ = [
    "PRESETS",
    "SHIPPED",
    "MGBPv2",
    "MGBPv2Config",
    "build_model",
    "default_model_for_scale",
    "load_model",
    "save_model",
]
