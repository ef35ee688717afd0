"""BasicSR integration: DUPruModel rounds, masks in checkpoints, freeze rules in training, stock loading, resume."""
import glob
import os.path as osp
import pytest
import torch
import yaml

from conftest import record_calls_in_steps, tiny_options, train_until_killed
from dupru_basicsr.pruning import num_to_remove

ROUNDS, E, RATE = 3, 4, 30
PER_LAYER = 16 * 16 * 9  # tiny MSRResNet body conv


def _pruned_opt(name, method, **kw):
    pruning = {'method': method, 'rounds': ROUNDS, 'iters_per_round': E, 'rate': RATE}
    pruning.update(kw.pop('pruning', {}))
    return tiny_options(name, 'DUPruModel', pruning=pruning, total_iter=ROUNDS * E, val_freq=E,
                        save_freq=kw.pop('save_freq', 2), ema_decay=kw.pop('ema_decay', 0.9), **kw)


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def _body(state):
    return {k: v for k, v in state.items() if k.startswith('body.') and k.endswith('.weight')}


@pytest.mark.parametrize('method', ['dupru', 'upru', 'imp'])
def test_three_rounds_exact_survivors_and_zeros_in_every_checkpoint(run_train, method):
    model, exp = run_train(_pruned_opt(f'rounds_{method}', method))
    models = osp.join(exp, 'models')
    alive = PER_LAYER
    for r in range(2, ROUNDS + 1):
        alive -= num_to_remove(alive, RATE)
        masks = _load(osp.join(models, f'masks_round{r}.pth'))['keep_masks']
        assert len(masks) == 4 and all(int(m.sum()) == alive for m in masks.values()), r
    assert alive == 1129  # 2304 -> 1613 -> 1129
    final_masks = _load(osp.join(models, f'masks_round{ROUNDS}.pth'))['keep_masks']
    checkpoints = glob.glob(osp.join(models, 'net_g_*.pth'))
    assert len(checkpoints) >= 6
    for path in checkpoints:
        ckpt = _load(path)
        it = osp.basename(path)[len('net_g_'):-len('.pth')]
        if it.isdigit() and int(it) <= E:
            continue  # round 1 is dense
        if it.startswith('round'):
            r = int(it[len('round'):-len('_best')])
            if r == 1:
                continue
            masks = ckpt['keep_masks']
            saved = _load(osp.join(models, f'masks_round{r}.pth'))['keep_masks']
            assert all(torch.equal(masks[n], saved[n]) for n in saved)
        else:
            r = (int(it) - 1) // E + 1 if it.isdigit() else ROUNDS
            masks = _load(osp.join(models, f'masks_round{r}.pth'))['keep_masks']
        for key in ('params', 'params_ema'):
            for name, w in _body(ckpt[key]).items():
                assert torch.equal(w[~masks[name]], torch.zeros_like(w[~masks[name]])), (path, key, name)
    # the last ticket carries the final masks and the kept fraction
    ticket = _load(osp.join(models, f'net_g_round{ROUNDS}_best.pth'))
    assert all(torch.equal(ticket['keep_masks'][n], final_masks[n]) for n in final_masks)
    assert ticket['ticket']['kept_fraction'] == pytest.approx(1129 / 2304)
    assert ticket['ticket']['round'] == ROUNDS and ticket['ticket']['method'] == method
    # the training state holds the pruning state
    state = _load(osp.join(exp, 'training_states', f'{ROUNDS * E}.state'))
    assert state['pruning']['rounds']['round'] == ROUNDS - 1
    assert model.pruner.mask.num_kept() == 4 * 1129


def test_upru_freezes_negative_weights_dupru_updates_them(run_train):
    """Round 2 starts from W0 ⊙ m (rewind init): UPru must end the round with every negative weight unchanged."""
    changed = {}
    for method in ('upru', 'dupru'):
        _, exp = run_train(_pruned_opt(f'neg_{method}', method, ema_decay=0))
        models = osp.join(exp, 'models')
        start = _load(osp.join(models, 'net_g_round2_best.pth'))  # saved at the end of round 2 (its only val)
        masks = _load(osp.join(models, 'masks_round2.pth'))['keep_masks']
        import dupru_basicsr.plugin.model  # noqa: F401
        # W0 of the run: the rewind state saved in the training state
        w0 = _load(osp.join(exp, 'training_states', f'{ROUNDS * E}.state'))['pruning']['pruner']['rewind_state']
        n_changed = n_neg = 0
        for name, w in _body(start['params']).items():
            round_start = w0[name] * masks[name]
            neg = round_start < 0
            n_neg += int(neg.sum())
            n_changed += int((w[neg] != round_start[neg]).sum())
        changed[method] = (n_changed, n_neg)
    assert changed['upru'][0] == 0 and changed['upru'][1] > 1000
    assert changed['dupru'][0] > 0.9 * changed['dupru'][1]


def test_checkpoints_load_into_stock_msrresnet_and_basicsr_test_reproduces_psnr(run_train, tmp_path, monkeypatch):
    from basicsr.archs.srresnet_arch import MSRResNet

    from dupru_basicsr.test import main as test_main
    opt = _pruned_opt('stock_load', 'dupru', ema_decay=0)
    _, exp = run_train(opt)
    ticket_path = osp.join(exp, 'models', f'net_g_round{ROUNDS}_best.pth')
    ticket = _load(ticket_path)
    net = MSRResNet(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=4)
    net.load_state_dict(ticket['params'], strict=True)
    test_opt = {
        'name': 'stock_load_test', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': dict(opt['datasets']['val'])},
        'network_g': opt['network_g'],
        'path': {'pretrain_network_g': ticket_path, 'param_key_g': 'params', 'strict_load_g': True},
        'val': {'save_img': False, 'suffix': None, 'metrics': opt['val']['metrics']},
    }
    test_yml = tmp_path / 'test.yml'
    test_yml.write_text(yaml.safe_dump(test_opt))
    monkeypatch.chdir(tmp_path)  # results/ go to the current directory
    test_main(['-opt', str(test_yml)])
    log = open(glob.glob(str(tmp_path / 'results' / 'stock_load_test' / 'test_*.log'))[0]).read()
    psnr = float(log.split('# psnr: ')[1].split()[0])
    assert psnr == pytest.approx(ticket['ticket']['value'], abs=1e-4)


def _final_weights(exp):
    ckpt = _load(osp.join(exp, 'models', 'net_g_latest.pth'))
    return ckpt['params'], ckpt['params_ema']


@pytest.mark.parametrize('stop_after', [5, 7], ids=['killed_after_round_boundary', 'killed_mid_round'])
def test_interrupted_and_resumed_equals_uninterrupted(run_train, monkeypatch, stop_after):
    _, exp_full = run_train(_pruned_opt('resume_full', 'dupru', pruning={'rewind': 'iter_1'}))
    full = _final_weights(exp_full)

    opt = _pruned_opt('resume_cut', 'dupru', pruning={'rewind': 'iter_1'})
    train_until_killed(monkeypatch, run_train, opt, stop_after + 1)
    _, exp_cut = run_train(opt, '--auto_resume')
    log = open(sorted(glob.glob(osp.join(exp_cut, 'train_*.log')))[-1]).read()
    resumed_iter = stop_after - 1
    epoch = (resumed_iter - 1) // 2  # 5 training images, batch 2 (last partial batch dropped): 2 iterations per epoch
    assert f'Resuming training from epoch: {epoch}, iter: {resumed_iter}.' in log
    resumed = _final_weights(exp_cut)
    for a, b in zip(full, resumed):
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_total_iter_must_match_schedule(run_train, tmp_path):
    from dupru_basicsr.plugin.option_base import OptionError
    opt = _pruned_opt('bad_total', 'dupru')
    opt['train']['total_iter'] = 13
    with pytest.raises(OptionError, match=r'train.total_iter is 13 but rounds \(3\) x iters_per_round \(4\) = 12'):
        run_train(opt)
    assert not osp.exists(tmp_path / 'experiments' / 'bad_total')
    assert not osp.exists(tmp_path / 'experiments')


def test_rewind_none_keeps_trained_weights_and_lr(run_train):
    opt = _pruned_opt('rewind_none', 'imp', pruning={'rewind': 'none'}, ema_decay=0)
    opt['train']['scheduler'] = {'type': 'CosineAnnealingRestartLR', 'periods': [E], 'restart_weights': [1],
                                 'eta_min': 1e-5}
    model, exp = run_train(opt)
    # round 2 starts from round 1's final weights ⊙ mask, not from W0
    end_round1 = _load(osp.join(exp, 'models', f'net_g_{E}.pth'))['params']
    masks = _load(osp.join(exp, 'models', 'masks_round2.pth'))['keep_masks']
    w0 = model.pruner.rewind_state
    name = 'body.0.conv1.weight'
    assert not torch.equal(end_round1[name], w0[name])
    assert model.finetune_lr is not None and model.finetune_lr[0] < 1e-3
    assert all(abs(lr - model.finetune_lr[0]) < 1e-12 for lr in model.get_current_learning_rate())
    del masks


def test_rewind_lr_restarts_schedule_from_trained_weights(run_train, monkeypatch):
    opt = _pruned_opt('rewind_lr', 'dupru', pruning={'rewind': 'lr'}, ema_decay=0)
    opt['train']['scheduler'] = {'type': 'CosineAnnealingRestartLR', 'periods': [E], 'restart_weights': [1],
                                 'eta_min': 1e-5}
    lrs = {}
    from dupru_basicsr.plugin.model import DUPruModel
    original = DUPruModel.optimize_parameters

    def record(self, current_iter):
        lrs[current_iter] = self.get_current_learning_rate()[0]
        original(self, current_iter)

    monkeypatch.setattr(DUPruModel, 'optimize_parameters', record)
    model, exp = run_train(opt)
    assert lrs[1] == lrs[E + 1] == lrs[2 * E + 1] == 1e-3  # the schedule restarts every round
    assert lrs[E] < 1e-3
    end_round1 = _load(osp.join(exp, 'models', f'net_g_{E}.pth'))['params']
    masks = _load(osp.join(exp, 'models', 'masks_round2.pth'))['keep_masks']
    # round 2's first weights are round 1's final weights ⊙ mask (not W0): check via the frozen-at-zero entries
    name = 'body.0.conv1.weight'
    w0 = model.pruner.rewind_state[name]
    assert not torch.equal(end_round1[name] * masks[name], w0 * masks[name])
    assert model.finetune_lr is None


@pytest.mark.parametrize('method', ['dupru', 'upru', 'imp'])
def test_gradual_pruning_tightens_masks_in_place(run_train, method):
    gradual = {'schedule': 'gradual', 'rounds': 1, 'iters_per_round': 12, 'start_iter': 2, 'end_iter': 10,
               'final_sparsity': 0.8, 'frequency': 4, 'rewind': 'none'}
    opt = tiny_options(f'gradual_{method}', 'DUPruModel', pruning=dict(gradual, method=method), total_iter=12,
                       val_freq=12, save_freq=1, ema_decay=0.9)
    model, exp = run_train(opt)
    from dupru_basicsr.pruning import GradualSchedule
    gs = GradualSchedule(2, 10, 0.8, 4)
    # prunes before iterations 2, 6, 10: the checkpoint after iteration t has the sparsity of the last prune <= t
    for it in range(1, 13):
        ckpt = _load(osp.join(exp, 'models', f'net_g_{it}.pth'))
        last_prune = max([p for p in (2, 6, 10) if p <= it], default=None)
        expected = 0 if last_prune is None else int(PER_LAYER * gs.sparsity_at(last_prune) + 0.5)
        for key in ('params', 'params_ema'):
            for name, w in _body(ckpt[key]).items():
                zeros = int((w == 0).sum())
                assert zeros >= expected, (it, key, name)
                if key == 'params':
                    assert int((~model.pruner.mask[name]).sum()) == int(PER_LAYER * 0.8 + 0.5)
    final = _body(_load(osp.join(exp, 'models', 'net_g_latest.pth'))['params'])
    for name, w in final.items():
        assert torch.equal(w[~model.pruner.mask[name]], torch.zeros(int((~model.pruner.mask[name]).sum())))
    ticket = _load(osp.join(exp, 'models', 'net_g_round1_best.pth'))
    assert ticket['ticket']['iter'] >= 10 and ticket['ticket']['schedule'] == 'gradual'


def test_dupru_model_starts_from_the_same_w0_as_srmodel_with_the_same_seed():
    """The option checks DUPruModel runs when it is built construct a throwaway network_g; they must not draw from
    the run's random stream, or stock and pruned runs with one manual_seed would start from different weights."""
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed

    def first_weights(model_type, pruning):
        opt = tiny_options(f'w0_{model_type}', model_type, pruning=pruning, total_iter=ROUNDS * E)
        opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
        opt['path'] = {'models': '/nonexistent', 'pretrain_network_g': None, 'strict_load_g': True,
                       'resume_state': None}
        set_random_seed(opt['manual_seed'])
        model = build_model(opt)
        return {k: v.clone() for k, v in model.net_g.state_dict().items()}

    stock = first_weights('SRModel', None)
    pruned = first_weights('DUPruModel', {'rounds': ROUNDS, 'iters_per_round': E})
    assert list(stock) == list(pruned)
    assert all(torch.equal(stock[k], pruned[k]) for k in stock)


@pytest.mark.parametrize('schedule', ['rounds', 'gradual'])
def test_ema_is_masked_when_the_masks_change_not_every_step_and_its_zeros_stay(run_train, monkeypatch, schedule):
    from dupru_basicsr.pruning import Pruner
    calls = record_calls_in_steps(monkeypatch, Pruner, 'apply_mask')
    if schedule == 'rounds':
        opt = _pruned_opt('ema_rounds', 'dupru', save_freq=1)
    else:
        opt = tiny_options('ema_gradual', 'DUPruModel', total_iter=12, val_freq=12, save_freq=1, ema_decay=0.9,
                           pruning={'schedule': 'gradual', 'rounds': 1, 'iters_per_round': 12, 'start_iter': 2,
                                    'end_iter': 10, 'final_sparsity': 0.8, 'frequency': 4, 'rewind': 'none'})
    _, exp = run_train(opt)
    assert True not in calls  # never inside a training step
    assert calls.count(False) >= 2  # but at every prune
    for it in range(1, 13):
        masks = _load(osp.join(exp, 'training_states', f'{it}.state'))['pruning']['pruner']['keep_masks']
        ema = _body(_load(osp.join(exp, 'models', f'net_g_{it}.pth'))['params_ema'])
        for name, w in ema.items():
            assert torch.equal(w[~masks[name]], torch.zeros(int((~masks[name]).sum()))), (it, name)
        if it > 10:
            assert all(int((~m).sum()) > 0 for m in masks.values())


def test_reinit_draws_a_seeded_fresh_init_on_the_cpu_generator_only(monkeypatch):
    """rewind: reinit must not touch any other random stream: the CPU generator is restored, and the CUDA
    generators (which torch.manual_seed would reseed for good) are not reseeded."""
    from basicsr.archs import build_network
    from basicsr.models import build_model
    opt = tiny_options('reinit', 'DUPruModel', pruning={'rounds': ROUNDS, 'iters_per_round': E, 'rewind': 'reinit'},
                       total_iter=ROUNDS * E)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'] = {'models': '/nonexistent', 'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}
    model = build_model(opt)
    reseeded = []
    monkeypatch.setattr(torch.cuda, 'manual_seed_all', lambda seed: reseeded.append(seed))
    monkeypatch.setattr(torch.cuda, 'manual_seed', lambda seed: reseeded.append(seed))
    cpu_state = torch.random.get_rng_state()
    fresh = model._fresh_state(1)
    assert reseeded == [] and torch.equal(torch.random.get_rng_state(), cpu_state)
    torch.manual_seed(opt['manual_seed'] + 7919)
    expected = build_network(dict(opt['network_g'])).state_dict()
    assert all(torch.equal(fresh[k], expected[k]) for k in expected)
    assert not torch.equal(fresh['conv_first.weight'], model._fresh_state(2)['conv_first.weight'])


def test_tensorboard_scalars_run_against_the_iteration(run_train, tmp_path):
    """TensorBoard (and wandb, which BasicSR feeds from it) get every pruning scalar at the iteration it belongs to:
    the validation metric per dataset, the kept share, the sparsity and the round, at each validation."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    opt = tiny_options('tb_run', 'DUPruModel', total_iter=6, val_freq=3,
                       pruning={'rounds': 2, 'iters_per_round': 3, 'rate': 40})
    opt['logger']['use_tb_logger'] = True
    run_train(opt)
    events = EventAccumulator(str(tmp_path / 'tb_logger' / 'tb_run'))
    events.Reload()
    tags = events.Tags()['scalars']
    for tag in ('pruning/val/psnr', 'pruning/kept_percent', 'pruning/target_sparsity', 'pruning/round'):
        assert tag in tags, tags
        assert [e.step for e in events.Scalars(tag)] == [3, 6], tag
    kept = [e.value for e in events.Scalars('pruning/kept_percent')]
    assert kept == pytest.approx([100.0, 60.0], abs=0.05)  # 40 % of each tensor, rounded to whole weights
    assert [e.value for e in events.Scalars('pruning/round')] == [1.0, 2.0]
    assert not [t for t in tags if t.endswith('_vs_kept')]
