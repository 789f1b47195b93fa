"""Copy weights between connbench cells and torch.nn.RNN/GRU/LSTM (test helper)."""

import torch
from torch import nn

from connbench.nn.model import SequenceModel

TORCH_CLASSES = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def torch_twin(model: SequenceModel) -> nn.Module:
    """A torch recurrent module with the same weights as ``model``'s layers (full only)."""
    cell = model.cell
    kw = {"nonlinearity": cell[4:]} if cell.startswith("rnn_") else {}
    ref = TORCH_CLASSES[cell](model.input_size, model.hidden, num_layers=len(model.layers),
                              bidirectional=model.bidirectional, **kw).double()
    H = model.hidden
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            for d, c in enumerate(layer):
                sfx = f"_l{i}" + ("_reverse" if d else "")
                w_ih, w_hh = c.weight_ih.detach(), c.rec.weight.detach()
                b_ih = c.bias_ih.detach().clone()
                b_hh = torch.zeros_like(b_ih)
                if cell == "lstm":  # ours (i, f, o, g) -> torch (i, f, g, o)
                    order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H),
                                       torch.arange(2 * H, 3 * H)])
                    w_ih, w_hh, b_ih = w_ih[order], w_hh[order], b_ih[order]
                if cell == "gru":
                    b_hh[2 * H:] = c.bias_hn.detach()
                getattr(ref, "weight_ih" + sfx).copy_(w_ih)
                getattr(ref, "weight_hh" + sfx).copy_(w_hh)
                getattr(ref, "bias_ih" + sfx).copy_(b_ih)
                getattr(ref, "bias_hh" + sfx).copy_(b_hh)
    return ref


def matching_grads(model: SequenceModel, ref: nn.Module):
    """Pairs (ours, torch's) of weight gradients after a backward through both."""
    H = model.hidden
    pairs = []
    for i, layer in enumerate(model.layers):
        for d, c in enumerate(layer):
            sfx = f"_l{i}" + ("_reverse" if d else "")
            g_ih, g_hh = getattr(ref, "weight_ih" + sfx).grad, getattr(ref, "weight_hh" + sfx).grad
            if model.cell == "lstm":
                order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H),
                                   torch.arange(2 * H, 3 * H)])
                g_ih, g_hh = g_ih[order], g_hh[order]
            pairs += [(c.weight_ih.grad, g_ih), (c.rec.weight.grad, g_hh)]
    return pairs
