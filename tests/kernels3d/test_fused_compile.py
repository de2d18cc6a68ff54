"""The kernels as the GPU runs them (not the interpreter): compiled for sm_90 here, no GPU needed.

Catches what the interpreter forgives (constexpr misuse, dtype mismatches in tl.dot, control flow the compiler
rejects) and checks that float32 tl.dot stays IEEE (no TF32 in the PTX).
"""

import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton", reason="Triton is not installed (pip install leanseg[gpu], or [dev])")

COMPILE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernels3d import fused

def compile_(fn, dtype, **constexprs):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in ("dw_ptr", "ds_ptr", "db_ptr") else "*" + dtype
        else:
            sig[name] = "fp32" if name == "slope" else "i32"
    consts = {(fn.arg_names.index(k),): v for k, v in constexprs.items()}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 2})

tile = dict(BLOCK_P=64, BLOCK_O=16, BLOCK_K=16)
k = compile_(fused._forward_kernel, "fp32", STRIDE=2, DIMS=3, HAS_BIAS=True, HAS_RES=True, ACT=2, **tile)
assert "tf32" not in k.asm["ptx"], "float32 tl.dot compiled to TF32"
compile_(fused._input_grad_kernel, "bf16", STRIDE=2, DIMS=3, **tile)
compile_(fused._param_grad_kernel, "fp16", STRIDE=1, DIMS=2, **tile)
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90():
    if "nvidia" not in triton.backends.backends:
        pytest.skip("Triton has no NVIDIA backend here")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", COMPILE], check=True, env=env, timeout=600)
