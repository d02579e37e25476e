"""DTSS gate: prefix masks, initial steps, straight-through gradients, mask loss."""
import pytest
import torch

from lava_dtss.model import build_model
from lava_dtss.model.dtss import DTSSGate, chosen_steps, mask_loss, soft_prefix_mask, upgrade_gate_state


def test_mask_is_always_a_prefix():
    torch.manual_seed(0)
    gate = DTSSGate(8, 'mlp')
    for _ in range(200):
        gate.length.data = torch.rand(1) * 10 - 1     # beyond [1, 8] too: clamped
        m = gate.mask().detach()
        k = gate.active_steps
        assert m.tolist() == [1.0] * k + [0.0] * (8 - k)
        assert int(m.sum()) == k


@pytest.mark.parametrize('t_max', [1, 2, 4, 7, 8])
def test_initial_active_steps_is_half_of_t_max(t_max):
    assert DTSSGate(t_max, 'qkv').active_steps == max(1, t_max // 2)


def test_soft_mask_interpolates_the_hard_masks_and_sums_to_the_length():
    for length in torch.linspace(1, 6, 41):
        soft = soft_prefix_mask(length, 6)
        lo, hi = int(length.floor()), int(length.ceil())
        hard = [torch.tensor([1.0] * k + [0.0] * (6 - k)) for k in (lo, hi)]
        frac = float(length - lo)
        assert torch.allclose(soft, (1 - frac) * hard[0] + frac * hard[1])
        assert torch.isclose(soft.sum(), length)


def test_gate_zeroes_spikes_after_last_active_step():
    gate = DTSSGate(4, 'attn')
    out = gate(torch.ones(2, 3, 4))
    assert out[..., :2].eq(1).all() and out[..., 2:].eq(0).all()


def test_mask_loss_lowers_selected_layers_only():
    torch.manual_seed(0)
    model = build_model('tiny')
    before = {n: m.gate.active_steps for n, m in model.gated_layers()}
    opt = torch.optim.SGD([g.length for g in model.gates()], lr=20.0)
    for _ in range(30):
        opt.zero_grad()
        mask_loss(model.gates(), ('qkv', 'attn', 'mlp')).backward()
        opt.step()
    for name, m in model.gated_layers():
        if m.gate.category == 'sps':
            assert m.gate.length.grad is None or not m.gate.length.grad.any()
            assert m.gate.active_steps == before[name]
        else:
            assert m.gate.active_steps < before[name], name


def test_task_loss_gradient_reaches_the_gates():
    torch.manual_seed(0)
    model = build_model('tiny')
    x = torch.rand(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [g.length.grad for g in model.gates()]
    assert all(gr is not None for gr in grads)
    assert sum(int(gr.abs().sum() > 0) for gr in grads) >= len(grads) - 1


def test_fixed_t_baseline_runs_every_step_without_trainable_gates():
    model = build_model('tiny', dtss=False, t_max=4)
    assert all(m.gate.active_steps == 4 for _, m in model.gated_layers())
    assert float(model.mask_loss(('qkv', 'attn', 'mlp', 'sps'))) == 0.0
    model(torch.rand(2, 1, 8, 8)).sum().backward()
    assert all(g.length.grad is None for g in model.gates())


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


@pytest.mark.parametrize('t_max', [1, 2, 4, 8, 256])
def test_reset_steps_selects_every_step_count(t_max):
    gate = DTSSGate(t_max, 'mlp')
    for k in range(1, t_max + 1):
        gate.reset_steps(k)
        assert gate.active_steps == k and float(gate.mask().sum()) == k


def test_forward_length_is_the_rounded_sum_of_the_soft_mask():
    """Forward, backward and mask loss act on one number: the hard mask's length is
    the soft mask's sum (what the mask loss lowers), rounded half up."""
    torch.manual_seed(1)
    gate = DTSSGate(8, 'qkv')
    for _ in range(300):
        gate.length.data = 1 + torch.rand(1) * 7
        e = float(gate.soft_mask().sum())
        assert abs(e - float(gate.length)) < 1e-5
        assert gate.active_steps == int(e + 0.5)
        assert float(gate.mask().sum()) == gate.active_steps


@pytest.mark.parametrize('t_max', [4, 8])
def test_mask_loss_moves_the_steps_one_at_a_time(t_max):
    """The mask loss alone, from T_max: the steps pass through every count down to 1
    and stay in range (the argmax rule of the score-vector gate jumped from T_max
    straight to 1: docs/dtss.md)."""
    gate = DTSSGate(t_max, 'mlp', init_steps=t_max)
    opt = torch.optim.SGD([gate.length], lr=0.5)
    seen = [gate.active_steps]
    for _ in range(200):
        opt.zero_grad()
        mask_loss([gate], ('mlp',)).backward()
        opt.step()
        gate.project_()
        if gate.active_steps != seen[-1]:
            seen.append(gate.active_steps)
    assert seen == list(range(t_max, 0, -1))
    assert float(gate.length) == 1.0


def test_task_gradient_is_the_value_of_the_boundary_step():
    """d loss / d length is the task's gradient on the mask of the step at the
    boundary (the next step to switch on or off)."""
    gate = DTSSGate(4, 'attn')
    gate.length.data.fill_(2.3)            # steps 1, 2 on; step 3 is the boundary
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    (gate(torch.ones(4)) * weights).sum().backward()
    assert torch.isclose(gate.length.grad, torch.tensor([3.0]))


def test_gates_of_the_earlier_score_formulation_load_with_the_same_steps():
    scores = torch.tensor([0.1, 0.9, 0.3, 0.2])      # argmax rule: 2 steps
    state = upgrade_gate_state({'blocks.0.mlp.fc1.gate.scores': scores, 'x': torch.ones(1)}, 4)
    assert set(state) == {'blocks.0.mlp.fc1.gate.length', 'x'}
    assert chosen_steps(state['blocks.0.mlp.fc1.gate.length'], 4) == 2
