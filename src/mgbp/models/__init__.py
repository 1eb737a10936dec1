"""The MGBP generators (Section III-A): MGBPv2 and MGBP-3D (Algorithm 1, Table I), MGBPv1 (Figure 3).

- `build_model(preset, **overrides)`: a fresh network of a preset of `PRESETS` (Table I and our own).
- `load_model(name_or_path, device=None)`: rebuild a network from a weight file alone (our safetensors,
  or the authors' PIRM-2018 `.model` files) or from a name in `SHIPPED`.
- `save_model(model, path, extra_metadata)`: safetensors with the config in the metadata.
- `FAMILIES` (`mgbp.models.families`): the families `load_model` rebuilds; `Generator`, `Capabilities` and
  `check_generator` (`mgbp.models.contract`): what every generator has and declares.
"""

from mgbp.models.contract import Capabilities, Generator, check_generator
from mgbp.models.families import FAMILIES
from mgbp.models.mgbpv2 import MGBPv2, MGBPv2Config
from mgbp.models.presets import PRESETS, build_model
from mgbp.models.weights import SHIPPED, default_model_for_scale, load_model, save_model

__all__ = [
    "FAMILIES",
    "PRESETS",
    "SHIPPED",
    "Capabilities",
    "Generator",
    "MGBPv2",
    "MGBPv2Config",
    "build_model",
    "check_generator",
    "default_model_for_scale",
    "load_model",
    "save_model",
]
