"""Run the kernels in Triton's interpreter (on CPU tensors) where there is no CUDA device.

Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when kernels3d.fused is first imported; that
happens lazily on the first kernels3d.lean_conv call, so setting it here, at collection, is early enough.
"""

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if "kernels3d.fused" in sys.modules and not sys.modules["kernels3d.fused"].INTERPRET:
        raise RuntimeError("kernels3d.fused was imported before tests/kernels3d/conftest.py set TRITON_INTERPRET=1")
