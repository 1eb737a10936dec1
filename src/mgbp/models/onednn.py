"""Convolution + bias + ReLU as one oneDNN primitive on CPU (inference only), with a plain PyTorch fallback.

Not a paper equation: an execution detail of the generators' convolutions (Algorithm 1, Figure 3). PyTorch runs
`relu(conv2d(x, w, b))` as a convolution, then a pass over the output for the ReLU; for 1x1 convolutions on one
thread it even takes a slower GEMM path that first copies the bias into the output. oneDNN fuses bias and ReLU
into the convolution (a "post-op"): measured on this 2-core Xeon (torch 2.13, one thread, NHWC), 1x1
convolutions of MGBPv1's DenseNet layers run at 51-54 GMAC/s fused against 26-39 GMAC/s unfused.

The fused operator is `torch.ops.mkldnn._convolution_pointwise`, the one PyTorch's own compiler (Inductor)
emits for this pattern on CPU. It has no autograd formula, so it is used only when autograd is off, on CPU, for
float32 / bfloat16 4D tensors, and when this torch build has it; everything else takes `F.conv2d` (+ an in-place
ReLU), which computes the same values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mgbp.tracing import is_tracing


def _fused_operator():
    try:
        operator = torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return None
    return operator if torch.backends.mkldnn.is_available() else None


_FUSED = _fused_operator()
_FUSED_DTYPES = (torch.float32, torch.bfloat16)


def eager_inference() -> bool:
    """True when autograd is off and nothing traces or compiles (TorchScript, ONNX / torch.export, Dynamo): the
    code may take inference-only shortcuts (fused operators without export rules, reused buffers)."""
    return not torch.is_grad_enabled() and not is_tracing()


def can_fuse(x: torch.Tensor) -> bool:
    """True when `conv2d` below runs as one oneDNN primitive for this input: CPU eager inference outside
    autocast (the fused operator has no autocast rule: under `amp: bf16` it would run float32 weights on bfloat16
    activations)."""
    return (_FUSED is not None and x.device.type == "cpu" and x.dim() == 4 and x.dtype in _FUSED_DTYPES
            and not torch.is_autocast_enabled("cpu") and eager_inference())


def _pair(value) -> list[int]:
    return [int(value), int(value)] if isinstance(value, int) else [int(v) for v in value]


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           relu: bool = False) -> torch.Tensor:
    """relu(conv2d(x, weight, bias)) (relu optional): fused on CPU without autograd, else plain PyTorch."""
    if can_fuse(x) and weight.dtype == x.dtype and (bias is None or bias.dtype == x.dtype):
        return _FUSED(x, weight, bias, _pair(padding), _pair(stride), [1, 1], 1, "relu" if relu else "none",
                      [], "")
    out = F.conv2d(x, weight, bias, stride, padding)
    return torch.relu_(out) if relu else out
