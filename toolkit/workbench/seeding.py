"""Every source of randomness comes from the run's seed, so two runs match byte for byte.

``derive(seed, "finetune", epoch)`` gives each stage and epoch its own stream:
a resumed stage replays exactly the epochs it had left, and every cell of a
seed sees the same data order in fine-tuning (common random numbers, which
makes differences between pruners less noisy).
"""
from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def derive(seed: int, *labels: object) -> int:
    """A 63-bit seed for one purpose of a run (stable across processes and Python versions)."""
    text = ":".join([str(int(seed)), *map(str, labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


def use_deterministic_algorithms(enabled: bool) -> None:
    """``--deterministic``: torch's deterministic kernels (GPU runs repeat exactly, often slower).

    CPU kernels are deterministic already for a fixed thread count; on CUDA
    this disables cuDNN's autotuner and non-deterministic atomics (cuBLAS
    needs ``CUBLAS_WORKSPACE_CONFIG``, set here), which costs speed: about
    10-30% on convolutions in PyTorch's own measurements, more for ops that
    only have an atomic implementation (they then raise instead of running).
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = enabled


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: NumPy and ``random`` follow torch's per-worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
