"""Shared test set-up: one intra-op thread.

The test tensors are tiny; with several OpenMP threads on a small shared machine, threads spin against each
other and a millisecond forward pass can take seconds. One thread keeps the suite fast and deterministic.
"""

import torch

torch.set_num_threads(1)
