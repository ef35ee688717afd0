"""The one reference of the options this package reads (docs/pruning_options.md) is made from their definitions;
`sparsity` asks for a final pruned share in both modes; a near miss of one of our top-level keys warns."""
import os.path as osp
import warnings

import pytest

from conftest import REPO, run_in, tiny_options
from dupru_basicsr.plugin.option_base import OptionError, OptionWarning
from dupru_basicsr.plugin.options import warn_about_top_level_near_misses
from dupru_basicsr.plugin.pruning_options import PruningConfig, reference_table
from dupru_basicsr.pruning import rate_for_sparsity

DOC = osp.join(REPO, 'docs', 'pruning_options.md')


def test_the_documented_reference_is_the_generated_one_with_a_row_per_key():
    text = open(DOC).read()
    documented = text.split('<!-- pruning-reference -->\n')[1].split('<!-- /pruning-reference -->')[0]
    assert documented == reference_table(), 'regenerate: python -m dupru_basicsr.plugin.pruning_reference'
    from dataclasses import fields
    for f in fields(PruningConfig):
        assert f'| `{f.name}` |' in documented, f.name


def test_a_key_without_its_reference_row_fails_the_table(monkeypatch):
    from dataclasses import field, make_dataclass

    import dupru_basicsr.plugin.pruning_options as po
    extended = make_dataclass('Extended', [('new_key', int, field(default=1))], bases=(PruningConfig, ))
    monkeypatch.setattr(po, 'PruningConfig', extended)
    with pytest.raises(ValueError, match='pruning.new_key has no type, allowed, meaning, example'):
        po.reference_table()


@pytest.mark.parametrize('rounds', [2, 5])
def test_sparsity_sets_the_rate_of_a_round_schedule(rounds):
    cfg = PruningConfig.from_opt({'sparsity': 0.9, 'rounds': rounds, 'iters_per_round': 10})
    assert cfg.rate == rate_for_sparsity(0.9, rounds - 1)
    assert (1 - cfg.rate / 100) ** (rounds - 1) == pytest.approx(0.1)


def test_sparsity_is_the_final_sparsity_of_a_gradual_schedule():
    cfg = PruningConfig.from_opt({'sparsity': 0.8, 'schedule': 'gradual', 'iters_per_round': 100, 'start_iter': 1,
                                  'end_iter': 60, 'frequency': 10})
    assert cfg.gradual['final_sparsity'] == 0.8


@pytest.mark.parametrize('section, message', [
    ({'sparsity': 0.9, 'rate': 10}, 'give either sparsity or rate, not both'),
    ({'sparsity': 0.9, 'schedule': 'gradual', 'final_sparsity': 0.9, 'iters_per_round': 9, 'start_iter': 1,
      'end_iter': 5, 'frequency': 1}, 'give either sparsity or final_sparsity'),
    ({'sparsity': 90, 'rounds': 5, 'iters_per_round': 1}, r'pruning.sparsity is 90; .* a fraction strictly between'),
    ({'sparsity': '9e-1', 'rounds': 5, 'iters_per_round': 1}, 'read as text'),
    ({'sparsity': 0.9, 'rounds': 1, 'iters_per_round': 1}, 'sparsity needs at least 2 rounds'),
    ({'schedule': 'gradual', 'iters_per_round': 9, 'start_iter': 1, 'end_iter': 5, 'frequency': 1},
     'pruning.sparsity is not set'),
])
def test_wrong_sparsity_settings_are_refused_naming_the_key(section, message):
    with pytest.raises(OptionError, match=message):
        PruningConfig.from_opt(section)


def test_a_run_with_sparsity_ends_there_and_logs_what_each_round_keeps(tmp_path, caplog):
    opt = tiny_options('by_sparsity', 'DUPruModel', total_iter=9, val_set=None,
                       pruning={'sparsity': 0.75, 'rounds': 3, 'iters_per_round': 3})
    opt['pruning'].pop('rate')  # the tiny option file's
    model = run_in(tmp_path, opt)
    assert model.pruner.mask.sparsity() == pytest.approx(0.75, abs=0.002)
    log = open(next((tmp_path / 'experiments' / 'by_sparsity').glob('train_*.log'))).read()
    assert 'kept share of the targets in rounds 1..3: 100.00%, 50.00%, 25.00%' in log


@pytest.mark.parametrize('key, warned', [('determinstic', 'deterministic'), ('prunning', 'pruning'),
                                         ('my_own_key', None), ('deterministic', None)])
def test_a_near_miss_of_our_top_level_keys_warns(key, warned):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        messages = warn_about_top_level_near_misses({'name': 'x', key: True})
    if warned is None:
        assert messages == [] and not caught
    else:
        assert len(messages) == 1 and f"did you mean '{warned}'" in messages[0]
        assert caught and issubclass(caught[0].category, OptionWarning)


@pytest.mark.parametrize('section, message', [
    ({'targets': True}, 'pruning.targets must be a preset'),
    ({'targets': 5}, 'pruning.targets must be a preset'),
    ({'eps': float('inf')}, 'pruning.eps is inf; it must be a finite number >= 0'),
    ({'eps': float('nan')}, 'pruning.eps is nan; it must be a finite number >= 0'),
    ({'rate': float('nan')}, 'pruning.rate is nan'),
    ({'sparsity': float('inf'), 'rounds': 3, 'iters_per_round': 2}, 'pruning.sparsity is inf'),
])
def test_non_finite_and_wrongly_typed_pruning_values_are_refused(section, message):
    with pytest.raises(OptionError, match=message):
        PruningConfig.from_opt(section)


@pytest.mark.parametrize('targets', ['whole', 'body', 'body.0.conv1.weight', ['body.*.weight']])
def test_presets_and_patterns_are_accepted_as_targets(targets):
    assert PruningConfig.from_opt({'targets': targets}).resolve_targets('MSRResNet')
