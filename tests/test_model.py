"""Presets, shapes and the Spikformer parameter count."""
import pytest
import torch

from lava_dtss.model import PRESETS, build_model, count_parameters


def test_spikformer_4_384_parameter_count_matches_paper():
    n = count_parameters(build_model('spikformer-4-384'))
    assert abs(n - 9.32e6) / 9.32e6 < 0.02, n


@pytest.mark.parametrize('preset,shape', [('tiny', (1, 8, 8)), ('fmnist', (1, 28, 28))])
def test_forward_shapes_and_time_last(preset, shape):
    model = build_model(preset)
    x = torch.rand(2, *shape)
    feats = model.features(x)
    assert feats.shape[-1] == model.cfg.t_max
    assert model(x).shape == (2, model.cfg.num_classes)
    report = model.time_step_report()
    assert set(report['active_steps']) == {n for n, _ in model.gated_layers()}
    assert report['avg_steps'] == model.cfg.t_max // 2


def test_categories_cover_the_vit():
    cats = {m.gate.category for _, m in build_model('tiny').gated_layers()}
    assert cats == {'sps', 'qkv', 'attn', 'mlp'}


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r'expected images of shape \[N, 1, 8, 8\]'):
        build_model('tiny')(torch.rand(2, 3, 8, 8))


def test_unknown_preset():
    with pytest.raises(ValueError, match='unknown preset'):
        build_model('nope')


def test_presets_by_name():
    assert {'tiny', 'fmnist', 'spikformer-4-384', 'spikformer-8-768'} <= set(PRESETS)


def test_whole_model_spikes_identical_with_stock_slayer_neuron():
    torch.manual_seed(0)
    fast = build_model('tiny', neuron_impl='fast')
    stock = build_model('tiny', neuron_impl='stock')
    stock.load_state_dict(fast.state_dict())
    x = torch.rand(8, 1, 8, 8)
    outs = {}
    for name, model in (('fast', fast), ('stock', stock)):
        model.eval()
        with torch.no_grad():
            outs[name + '_logits'], outs[name] = model.forward_with_spikes(x)
    assert sum(float(s.sum()) for s in outs['fast'].values()) > 0
    for n in outs['fast']:
        assert torch.equal(outs['fast'][n], outs['stock'][n]), n
    assert torch.equal(outs['fast_logits'], outs['stock_logits'])


@pytest.mark.parametrize('preset,size,tokens,classes', [
    ('spikformer-4-384', 32, (8, 8), 100), ('spikformer-8-768', 224, (14, 14), 1000)])
def test_spikformer_presets_run_with_spikformer_token_grids(preset, size, tokens, classes):
    model = build_model(preset, t_max=1, num_classes=classes)
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, size, size))
    assert logits.shape == (1, classes)
    assert model.rpe.last_shape[1:] == tokens
    assert len(model.blocks) == model.cfg.depth
