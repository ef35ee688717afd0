"""`prune_model`: one call prunes any nn.Module (presets by class, patterns, or every conv/linear weight) to an
exact share, layer or global; the README's snippet runs as written and its fine-tune keeps the zeros."""
import os.path as osp
import re

import pytest
import torch
import torchvision
from torch import nn

from conftest import REPO
from dupru_basicsr.pruning import prune_model


def _readme_snippet():
    text = open(osp.join(REPO, 'README.md')).read()
    return re.search(r'<!-- prune-snippet -->\n```python\n(.*?)```\n<!-- /prune-snippet -->', text, re.S).group(1)


def test_the_readme_snippet_runs_as_written_and_keeps_the_zeros(tmp_path, monkeypatch):
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.manual_seed(0)
    trained = MSRResNet(num_feat=64, num_block=16, upscale=4)
    torch.save({'params': trained.state_dict()}, tmp_path / 'net_g_latest.pth')
    g = torch.Generator().manual_seed(1)
    loader = [(torch.rand(1, 3, 8, 8, generator=g), torch.rand(1, 3, 32, 32, generator=g)) for _ in range(2)]
    monkeypatch.chdir(tmp_path)
    namespace = {'loader': loader}
    exec(compile(_readme_snippet(), 'README.md snippet', 'exec'), namespace)
    saved = torch.load(tmp_path / 'net_g_pruned.pth', weights_only=True)
    pruner = namespace['pruner']
    assert pruner.targets == ['body.*.weight', 'upconv1.weight', 'upconv2.weight', 'conv_hr.weight']
    stock = MSRResNet(num_feat=64, num_block=16, upscale=4)
    stock.load_state_dict(saved['params'], strict=True)
    pruned = kept = 0
    for name, keep in saved['keep_masks'].items():
        w = saved['params'][name]
        assert torch.equal(w[~keep], torch.zeros(int((~keep).sum())))  # exact zeros after the fine-tune steps
        pruned, kept = pruned + int((~keep).sum()), kept + int(keep.sum())
    assert pruned / (pruned + kept) == pytest.approx(0.9, abs=1e-5)
    changed = [n for n, w in saved['params'].items() if not torch.equal(w, trained.state_dict()[n])]
    assert changed  # the fine-tune trained


@pytest.mark.parametrize('scope', ['global', 'layer'])
def test_any_module_without_a_preset_prunes_every_conv_and_linear_weight(scope):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    pruner = prune_model(net, sparsity=0.8, scope=scope)
    convs_and_linears = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert list(pruner.params) == [f'{n}.weight' for n in convs_and_linears]
    assert pruner.mask.sparsity() == pytest.approx(0.8, abs=1e-4)
    if scope == 'layer':
        for name, sparsity in pruner.mask.layer_sparsity().items():
            assert sparsity == pytest.approx(0.8, abs=1.0 / pruner.params[name].numel() + 1e-9), name
    for name, p in pruner.params.items():
        assert torch.equal(p.detach()[~pruner.mask[name]], torch.zeros(int((~pruner.mask[name]).sum()))), name
    assert not any(n.endswith('bias') or n.startswith('bn') for n in pruner.params)


def test_presets_and_patterns_and_an_unknown_preset():
    from basicsr.archs.srresnet_arch import MSRResNet
    net = MSRResNet(num_feat=16, num_block=2, upscale=4)
    assert prune_model(net, 0.5, targets='body').targets == ['body.*.weight']
    assert list(prune_model(net, 0.5, targets=['conv_first.weight']).params) == ['conv_first.weight']
    with pytest.raises(ValueError, match='No pruning target preset for network type "Sequential"'):
        prune_model(nn.Sequential(nn.Conv2d(3, 3, 3)), 0.5, targets='whole')
