"""Whether torch is tracing or compiling the code running now (TorchScript, torch.export / ONNX, Dynamo).

Not a paper equation: the one guard for inference-only shortcuts. While tracing, a tensor made is a fake or
symbolic one that must not outlive the trace (so nothing is cached), and operators without export rules must not
enter the traced graph (`mgbp.models.onednn`'s fused convolutions, reused buffers). Used by `mgbp.resize` and
`mgbp.models.onednn`.
"""

from __future__ import annotations

import torch


def is_tracing() -> bool:
    """True under torch.jit tracing/scripting, torch.compile (Dynamo) and torch.export (ONNX export included)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = torch.compiler  # torch >= 2.11 (pyproject) has all three probes
    return compiler.is_compiling() or compiler.is_exporting() or compiler.is_dynamo_compiling()
