"""Optional sections of the MGBPv2 config (the noise mask of Algorithm 1's line 1, the output projection after
its line 9): read from a weight file's JSON, and set on a trained model without touching its weights.

Each section is a frozen dataclass, stored in the file's config as a mapping of its fields, absent (None) when
the model runs Algorithm 1 as printed.
"""

from __future__ import annotations

import dataclasses

from mgbp.errors import ConfigError


def section_from_any(cls, value, name: str, convert=lambda v: v):
    """None, a `cls`, or its mapping (as stored in a weight file's config; each value passed through `convert`)
    -> a `cls` or None; ConfigError naming the config key `name` for anything else or an unknown field."""
    if value is None or isinstance(value, cls):
        return value
    fields = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping of {', '.join(fields)}; got {value!r}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {name} keys: {', '.join(unknown)}")
    return cls(**{k: convert(v) for k, v in value.items()})


def with_section(model, name: str, section):
    """An image MGBPv2 with the same weights under a config whose section `name` is `section` (None: removed)."""
    if model.family != "mgbpv2":  # the generator contract's family: image MGBPv2 only
        raise ConfigError(f"{name}: needs an image MGBPv2 model, got {model.family}")
    changed = type(model)(dataclasses.replace(model.config, **{name: section}))
    changed.preset = model.preset
    changed.load_state_dict(model.state_dict())
    return changed.to(next(model.parameters()).device)
