"""A fused time loop for Elman cells whose W_hh is elementwise (diagonal, band, Jordan).

Autograd records several nodes per step for these structures (pad, one addcmul per
diagonal, the activation, and the gradient accumulation of every weight view), and at
large H the bookkeeping costs as much as the arithmetic. This ``autograd.Function``
runs the whole sequence: the forward loop writes straight into a preallocated
(T, B, H) output (no ``torch.stack``, PERF_NOTES pitfall 6), and the backward loop is
written by hand: per step one add, the activation's backward and one addcmul per
diagonal. The weight gradient is one reduction per diagonal over the whole sequence,
not one per step.

The unfused path (autograd through ``Structure.stepper``) stays, and the tests tie
the two together, values and gradients.
"""

from __future__ import annotations

import torch

from connbench.nn.kernels.activations import tanh_


def _act_forward_(x: torch.Tensor, act: str) -> None:
    """The activation, in place."""
    if act == "tanh":
        tanh_(x)
    elif act == "sigmoid":
        torch.sigmoid(x, out=x)
    else:
        x.relu_()


def _act_backward(grad: torch.Tensor, y: torch.Tensor, act: str, out: torch.Tensor) -> None:
    if act == "tanh":
        torch.ops.aten.tanh_backward.grad_input(grad, y, grad_input=out)
    elif act == "sigmoid":
        torch.ops.aten.sigmoid_backward.grad_input(grad, y, grad_input=out)
    else:
        torch.ops.aten.threshold_backward.grad_input(grad, y, 0.0, grad_input=out)


class FusedElementwiseElman(torch.autograd.Function):
    """h_t = act(u_t + Σ_o shift_o(h_{t−1}) ⊙ w_o) over a whole sequence.

    ``table`` (K, H) holds the weights of each offset o (W[j+o, j] = table[k, j]),
    zero where j+o falls outside [0, H); ``pads`` = (left, right).
    """

    @staticmethod
    def forward(ctx, us, table, offsets, pads, act):
        T, B, H = us.shape
        left, right = pads
        starts = [left + o for o in offsets]
        # outputs live inside a zero-padded buffer, so the previous state is read as
        # shifted slices with no pad or copy per step
        out_pad = us.new_zeros(T, B, H + left + right)
        prev = us.new_zeros(B, H + left + right)
        for t in range(T):
            y = out_pad[t, :, left:left + H]
            torch.addcmul(us[t], prev[:, starts[0]:starts[0] + H], table[0], out=y)
            for k in range(1, len(starts)):
                y.addcmul_(prev[:, starts[k]:starts[k] + H], table[k])
            _act_forward_(y, act)
            prev = out_pad[t]
        ctx.save_for_backward(out_pad, table)
        ctx.meta = (starts, left, act)
        return out_pad[:, :, left:left + H]

    @staticmethod
    def backward(ctx, grad_out):
        out_pad, table = ctx.saved_tensors
        starts, left, act = ctx.meta
        T, B, Hp = out_pad.shape
        H = table.shape[-1]
        out = out_pad[:, :, left:left + H]
        grad_pre = torch.empty(T, B, H, dtype=out_pad.dtype, device=out_pad.device)
        gh_pad = out_pad.new_zeros(B, Hp)
        carry = None  # dL/dh_t from step t+1
        for t in range(T - 1, -1, -1):
            g = grad_out[t] if carry is None else torch.add(grad_out[t], carry)
            _act_backward(g, out[t], act, grad_pre[t])
            if t == 0:
                break
            if len(starts) == 1 and Hp == H:  # diagonal: one multiply
                carry = grad_pre[t] * table[0]
                continue
            # dL/dh_{t-1}[j + o] += grad_pre[t][j] * w_o[j]: the forward's shifted
            # slices, accumulated into a padded buffer whose pads are discarded
            gh_pad.zero_()
            for k, s in enumerate(starts):
                gh_pad[:, s:s + H].addcmul_(grad_pre[t], table[k])
            carry = gh_pad[:, left:left + H]
        grad_table = None
        if ctx.needs_input_grad[1]:
            g, prev = grad_pre[1:], out_pad[:-1]  # h_{t-1} for t >= 1, zero-padded
            grad_table = torch.stack([(g * prev[..., s:s + H]).sum((0, 1)) for s in starts])
        return grad_pre, grad_table, None, None, None


def elementwise_table(rec) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, int]] | None:
    """(table (K, H), offsets, pads) if ``rec`` is an elementwise single-gate structure."""
    from connbench.nn.structures import DiagonalStructure, ShiftedProducts

    if rec.gates != 1:
        return None
    if isinstance(rec, DiagonalStructure):
        return rec.weight, (0,), (0, 0)
    if isinstance(rec, ShiftedProducts) and not rec.cyclic:
        return rec.table()[:, 0], rec.offsets, (rec.pad_left, rec.pad_right)
    return None
