"""DTSS gate: prefix masks, initial steps, straight-through gradients, mask loss."""
import pytest
import torch

from lava_dtss.model import build_model
from lava_dtss.model.dtss import DTSSGate, mask_loss, soft_prefix_mask


def test_mask_is_always_a_prefix():
    torch.manual_seed(0)
    gate = DTSSGate(8, 'mlp')
    for _ in range(200):
        gate.scores.data = torch.randn(8) * 3
        m = gate.mask().detach()
        k = gate.active_steps
        assert m.tolist() == [1.0] * k + [0.0] * (8 - k)
        assert int(m.sum()) == k


@pytest.mark.parametrize('t_max', [1, 2, 4, 7, 8])
def test_initial_active_steps_is_half_of_t_max(t_max):
    assert DTSSGate(t_max, 'qkv').active_steps == max(1, t_max // 2)


def test_soft_mask_is_triangular_matrix_times_softmax():
    s = torch.randn(6)
    p = torch.softmax(s, 0)
    M = torch.triu(torch.ones(6, 6))  # M[t, k] = 1 for k >= t
    assert torch.allclose(soft_prefix_mask(s), M @ p)


def test_gate_zeroes_spikes_after_last_active_step():
    gate = DTSSGate(4, 'attn')
    out = gate(torch.ones(2, 3, 4))
    assert out[..., :2].eq(1).all() and out[..., 2:].eq(0).all()


def test_mask_loss_lowers_selected_layers_only():
    torch.manual_seed(0)
    model = build_model('tiny')
    before = {n: m.gate.active_steps for n, m in model.gated_layers()}
    opt = torch.optim.SGD([g.scores for g in model.gates()], lr=20.0)
    for _ in range(30):
        opt.zero_grad()
        mask_loss(model.gates(), ('qkv', 'attn', 'mlp')).backward()
        opt.step()
    for name, m in model.gated_layers():
        if m.gate.category == 'sps':
            assert m.gate.scores.grad is None or not m.gate.scores.grad.any()
            assert m.gate.active_steps == before[name]
        else:
            assert m.gate.active_steps < before[name], name


def test_task_loss_gradient_reaches_the_scores():
    torch.manual_seed(0)
    model = build_model('tiny')
    x = torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [g.scores.grad for g in model.gates()]
    assert all(gr is not None for gr in grads)
    assert sum(int(gr.abs().sum() > 0) for gr in grads) >= len(grads) - 1


def test_fixed_t_baseline_runs_every_step_without_scores():
    model = build_model('tiny', dtss=False, t_max=4)
    assert all(m.gate.active_steps == 4 for _, m in model.gated_layers())
    assert float(model.mask_loss(('qkv', 'attn', 'mlp', 'sps'))) == 0.0
    model(torch.rand(2, 1, 8, 8)).sum().backward()
    assert all(g.scores.grad is None for g in model.gates())


def test_unknown_category_is_an_error():
    with pytest.raises(ValueError, match='category'):
        DTSSGate(4, 'bogus')
    with pytest.raises(ValueError, match='categories'):
        mask_loss([], ('bogus',))


def test_category_weights_scale_the_mask_loss():
    model = build_model('tiny')
    gates = model.gates()
    full = mask_loss(gates, ('qkv', 'mlp'))
    half_qkv = mask_loss(gates, ('qkv', 'mlp'), {'qkv': 0.5})
    n_qkv = sum(g.category == 'qkv' for g in gates)
    n_mlp = sum(g.category == 'mlp' for g in gates)
    per_layer = float(gates[0].soft_mask().sum() / gates[0].t_max)
    assert torch.isclose(full, torch.tensor(per_layer))
    expected = (0.5 * n_qkv + n_mlp) * per_layer / (n_qkv + n_mlp)
    assert torch.isclose(half_qkv, torch.tensor(expected))
