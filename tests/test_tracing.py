"""mgbp.tracing.is_tracing: False in plain eager code, True inside each kind of trace the package meets
(torch.jit.trace, torch.compile's Dynamo, torch.export), since the shortcuts it guards would break those graphs."""

from __future__ import annotations

import pytest
import torch

from mgbp.tracing import is_tracing


def _flag(x: torch.Tensor) -> torch.Tensor:
    return x + (1.0 if is_tracing() else 0.0)


class Flag(torch.nn.Module):
    def forward(self, x):
        return _flag(x)


def test_eager_code_is_not_traced():
    assert not is_tracing()
    assert float(_flag(torch.zeros(1))) == 0.0


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_each_trace_is_seen():
    x = torch.zeros(1)
    assert float(torch.jit.trace(_flag, x, check_trace=False)(x)) == 1.0
    assert float(torch.compile(_flag, backend="eager", fullgraph=True)(x)) == 1.0
    assert float(torch.export.export(Flag(), (x,)).module()(x)) == 1.0
