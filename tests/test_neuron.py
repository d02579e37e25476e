"""The fused neuron reproduces stock SLAYER CUBA spikes exactly (and its gradients)."""
import pytest
import torch
from lava.lib.dl.slayer.neuron import cuba

from lava_dtss.neuron import FastCubaNeuron, cuba_forward


@pytest.mark.parametrize('params', [
    dict(threshold=1.0, current_decay=1.0, voltage_decay=0.5),     # the ViT's LIF (tau = 2)
    dict(threshold=1.25, current_decay=0.25, voltage_decay=0.03),  # general CUBA, float64 state path
    dict(threshold=0.5, current_decay=1.0, voltage_decay=0.0),     # integrate-and-fire
])
def test_spikes_and_gradients_match_stock_slayer(params):
    torch.manual_seed(0)
    params = dict(params, tau_grad=0.1, scale_grad=1.0)
    x = (torch.randn(8, 16, 6, 6, 8) * 1.5).requires_grad_()
    fast, stock = FastCubaNeuron(**params), cuba.Neuron(**params)
    s_fast, s_stock = fast(x), stock(x)
    assert s_stock.sum() > 0
    assert torch.equal(s_fast, s_stock)
    g = torch.randn(s_fast.shape)  # contiguous, not aliased with any output
    g_fast, = torch.autograd.grad(s_fast, x, g.clone())
    g_stock, = torch.autograd.grad(s_stock, x, g.clone())
    assert torch.allclose(g_fast, g_stock, rtol=1e-5, atol=1e-7)


def test_fixed_point_semantics_of_one_neuron():
    # v halves each step (rounded toward zero in 1/4096 units), spikes when v > theta, resets
    x = torch.tensor([[[0.75, 0.75, 0.75, 0.0, 2.0]]])
    s, v = cuba_forward(x, du=4096, dv=2048, threshold=1.0)
    assert s.tolist() == [[[0, 1, 0, 0, 1]]]
    assert (v / 4096).tolist() == [[[0.75, 1.125, 0.75, 0.375, 2.1875]]]


def test_bias_is_added_to_voltage_every_step():
    x = torch.zeros(1, 1, 4, dtype=torch.float64)
    s, v = cuba_forward(x, du=4096, dv=4096, threshold=1.0, bias=torch.tensor([0.6], dtype=torch.float64))
    assert s.reshape(-1).tolist() == [0, 0, 0, 0]
    s, v = cuba_forward(x, du=4096, dv=0, threshold=1.0, bias=torch.tensor([0.6], dtype=torch.float64))
    assert s.reshape(-1).tolist() == [0, 1, 0, 1]
