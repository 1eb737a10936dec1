"""The generator families `load_model` can rebuild (Section III-A: MGBPv2 and MGBP-3D of Algorithm 1, MGBPv1 of
Figure 3): one table, as spandrel's architecture registry.

Each entry names the class that builds a network from the config stored in our weight files, whether it takes
clips, and, for a family whose foreign weight files people have (the authors' PIRM-2018 `.model` state dicts),
how to recognise such a state dict by its keys and build the network from it. What a family supports (its
`Capabilities`) is declared by its class (`mgbp.models.contract`). Adding a family is adding one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from mgbp.errors import WeightFileError
from mgbp.models.contract import Capabilities
from mgbp.models.mgbpv1 import MGBPv1, from_authors_state_dict, is_authors_state_dict
from mgbp.models.mgbpv2 import MGBPv2


@dataclass(frozen=True)
class Family:
    name: str  # the `family` of its models and of our weight files' metadata
    description: str
    cls: type[nn.Module]
    video: bool  # takes clips (N, C, T, H, W)
    recognises: Callable[[Mapping], bool] | None = None  # a foreign state dict of this family, by its keys
    from_state_dict: Callable[[Mapping], nn.Module] | None = None  # ... built and loaded

    @property
    def capabilities(self) -> Capabilities:
        return self.cls.capabilities

    def build(self, config: Mapping) -> nn.Module:
        """A network of this family from the config of our metadata (a JSON object)."""
        return self.cls.from_config(config)


FAMILIES: dict[str, Family] = {
    "mgbpv2": Family("mgbpv2", "MGBPv2 (Algorithm 1) on images", MGBPv2, video=False),
    "mgbp3d": Family("mgbp3d", "MGBP-3D (Algorithm 1, 3D convolutions) on clips", MGBPv2, video=True),
    "mgbpv1": Family("mgbpv1", "MGBPv1 (Figure 3), the authors' PIRM-2018 network", MGBPv1, video=False,
                     recognises=is_authors_state_dict, from_state_dict=from_authors_state_dict),
}


def get_family(name: str, where: str = "model") -> Family:
    """The family of that name; a WeightFileError naming the known ones otherwise."""
    if name not in FAMILIES:
        raise WeightFileError(f"{where}: unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]
