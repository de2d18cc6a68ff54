"""The CPU fast path as a ``torch.library`` custom op (``leanseg::lean_conv``), for torch.export and torch.compile.

The C kernel reads raw data pointers, which a tracer cannot follow ("Cannot access data pointer of Tensor"). As a
custom op it is one opaque node: the fake (meta) implementation gives tracers the output's shape and channels-last
strides without running it, and the autograd formula lets compiled graphs train. The dispatcher
(``leanseg.nn.functional.lean_conv``) routes here only while compiling or exporting; eager calls keep the direct
autograd Function of ``leanseg.nn._cpu``, whose backward reuses what its forward saved.

The backward op recomputes the forward inside ``torch.autograd.grad`` over ``lean_conv_cpu`` rather than calling
``_cpu``'s backward pieces: ``lean_conv_cpu(x, weight, stencil, bias, stride)`` is the one entry point of that
module that stays stable while its internals change, at the price of one extra forward pass per backward.
"""

from __future__ import annotations

import torch

from kernels3d.reference import out_size


@torch.library.custom_op("leanseg::lean_conv", mutates_args=())
def lean_conv_op(x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor, bias: torch.Tensor | None,
                 stride: int) -> torch.Tensor:
    """The CPU lean convolution (arguments already checked by the dispatcher); channels-last output."""
    from leanseg.nn._cpu import lean_conv_cpu

    return lean_conv_cpu(x, weight, stencil, bias, stride)


@lean_conv_op.register_fake
def _lean_conv_fake(x, weight, stencil, bias, stride):
    out = [out_size(n, stride) for n in x.shape[2:]]
    return x.new_empty((x.shape[0], *out, weight.shape[0])).movedim(-1, 1)  # (N, C_out, *out), channels-last


@torch.library.custom_op("leanseg::lean_conv_backward", mutates_args=())
def lean_conv_backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stencil: torch.Tensor,
                          bias: torch.Tensor | None, stride: int) -> list[torch.Tensor]:
    """(dx, dweight, dstencil, dbias) of the CPU lean convolution; dbias is empty when there is no bias."""
    from leanseg.nn._cpu import lean_conv_cpu

    inputs = [t.detach().requires_grad_() for t in (x, weight, stencil)]
    b = bias.detach().requires_grad_() if bias is not None else None
    with torch.enable_grad():
        y = lean_conv_cpu(inputs[0], inputs[1], inputs[2], b, stride)
        grads = torch.autograd.grad(y, inputs + ([b] if b is not None else []), grad)
    return [g.contiguous() for g in grads] + ([] if b is not None else [x.new_empty(0)])


@lean_conv_backward_op.register_fake
def _lean_conv_backward_fake(grad, x, weight, stencil, bias, stride):
    db = torch.empty_like(bias) if bias is not None else x.new_empty(0)
    return [torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight),
            torch.empty_like(stencil), db]


def _setup_context(ctx, inputs, output):
    x, weight, stencil, bias, stride = inputs
    ctx.save_for_backward(x, weight, stencil, bias)
    ctx.stride = stride


def _backward(ctx, grad):
    x, weight, stencil, bias = ctx.saved_tensors
    dx, dw, ds, db = lean_conv_backward_op(grad, x, weight, stencil, bias, ctx.stride)
    return dx, dw, ds, db if bias is not None else None, None


lean_conv_op.register_autograd(_backward, setup_context=_setup_context)


def tracing() -> bool:
    """True while torch.compile (dynamo), torch.export or torch.jit/ONNX trace: raw data pointers are not
    available then (or, for torch.jit, the C kernel's work would not be recorded)."""
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export())


__all__ = ["lean_conv_backward_op", "lean_conv_op", "tracing"]
