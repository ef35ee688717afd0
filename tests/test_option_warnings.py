"""Warnings, not refusals, for pruning settings that are allowed but probably not meant: targets that are biases or
normalisation weights, and an eps above 1 % of the median initial |W| of the targets (dupru_basicsr.plugin)."""
import warnings

import pytest
import torch.nn as nn

from conftest import run_in, tiny_options
from dupru_basicsr.plugin.option_base import OptionWarning
from dupru_basicsr.plugin.options import check_options
from dupru_basicsr.plugin.pruning_options import PruningConfig, warn_about_targets


def _opt(**pruning):
    return tiny_options('warn', 'DUPruModel', pruning={'rounds': 2, 'iters_per_round': 1, 'rate': 30, **pruning},
                        total_iter=2, val_set=None, save_freq=1)


def _option_warnings(opt):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        check_options(opt)
    return [str(w.message) for w in caught if issubclass(w.category, OptionWarning)]


def test_defaults_give_no_warning():
    assert _option_warnings(_opt()) == []
    assert _option_warnings(_opt(eps=1e-5, method='upru')) == []


def test_bias_targets():
    messages = _option_warnings(_opt(targets=['body.*.weight', 'conv_first.bias', 'body.*.bias']))
    assert len(messages) == 1, messages
    assert messages[0].startswith('pruning.targets selects 5 bias tensor(s) (conv_first.bias, body.0.conv1.bias, '
                                  'body.0.conv2.bias, body.1.conv1.bias and 1 more): biases start at 0.0, so '
                                  'magnitude pruning removes them first, and dupru freezes them'), messages[0]
    imp = _option_warnings(_opt(targets=['conv_first.bias'], method='imp'))
    assert len(imp) == 1 and 'freezes' not in imp[0]


def test_eps_above_one_percent_of_the_weights():
    messages = _option_warnings(_opt(eps=1e-3))
    assert len(messages) == 1, messages
    assert messages[0].startswith('pruning.eps is 0.001, above 1% of the median initial |W| of the targets ('), \
        messages[0]
    assert _option_warnings(_opt(eps=1e-3, method='imp')) == []  # imp freezes the pruned weights only, eps unused


def test_the_threshold_is_the_median_of_the_targets():
    net = nn.Sequential(nn.Linear(100, 1, bias=False))
    nn.init.constant_(net[0].weight, 0.5)
    net[0].weight.data[0, :49] = 0.01  # median |W| = 0.5: 1 % is 0.005
    targets = dict(net.named_parameters())
    with pytest.warns(OptionWarning):
        assert len(warn_about_targets(net, targets, PruningConfig(eps=0.0051))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert warn_about_targets(net, targets, PruningConfig(eps=0.0049)) == []


def test_normalisation_weights():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.GroupNorm(2, 8), nn.LayerNorm(8), nn.Conv2d(8, 3, 1))
    targets = {n: p for n, p in net.named_parameters() if n.endswith('weight')}
    with pytest.warns(OptionWarning) as record:
        messages = warn_about_targets(net, targets, PruningConfig())
    assert [str(w.message) for w in record] == messages
    assert len(messages) == 1, messages
    assert messages[0].startswith('pruning.targets selects 3 normalisation weight(s) (1.weight, 2.weight, 3.weight):')


def test_training_still_starts(tmp_path):
    with pytest.warns(OptionWarning, match='pruning.targets selects 1 bias tensor'):
        run_in(tmp_path, _opt(targets=['body.*.weight', 'conv_last.bias']))
    assert (tmp_path / 'experiments' / 'warn' / 'models' / 'net_g_2.pth').is_file()
