"""DUPruModel as a BasicSR plugin: the three launch paths of docs/plugin.md, each trained, SIGKILLed mid-round and
resumed with --auto_resume, in real subprocesses on the CPU.

a. `python -m dupru_basicsr.train` (dupru-train): the resumed run ends with exactly the uninterrupted run's weights;
b. a BasicSR checkout registered with `dupru_basicsr.register`, trained by the checkout's own `basicsr/train.py`;
c. a project script `import dupru_basicsr; from basicsr.train import train_pipeline; train_pipeline(os.getcwd())`.

BasicSR's own loop (b, c) is not bit-exact on resume (it restarts the interrupted epoch's data), so for b and c the
tests check what it guarantees: the resumed run continues the round schedule (round index, the masks in force when
it was killed, the kept count of every later mask), pruned weights are exactly 0 in every checkpoint, every round
leaves a ticket, and the final checkpoint loads strictly into stock MSRResNet.

The kill is a test-only hook installed from outside the product: a `sitecustomize.py` (written by the test, put on
PYTHONPATH of the child only) wraps DUPruModel.optimize_parameters when the module is imported, and SIGKILLs the
process after the optimizer step of iteration KILL_AT, without changing the import order of the launch path.
"""
import glob
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import pytest
import torch

from conftest import REPO, run_in, tiny_options, write_options

ROUNDS, E, RATE = 3, 4, 30
TOTAL = ROUNDS * E
KILL_AT = 7  # round 2 (iterations 5..8), after its prune; the newest training state then is 6.state
SAVE_FREQ, VAL_FREQ = 3, 6  # neither divides the round length: BasicSR's loop neither saves nor validates there
PY = sys.executable

KILL_HOOK = '''
import importlib.abc
import importlib.machinery
import os
import signal
import sys

KILL_AT = int(os.environ['PLUGIN_TEST_KILL_AT'])
NAME = 'dupru_basicsr.plugin.model'


class _KillAfterStep(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != NAME:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            exec_module(module)
            optimize = module.DUPruModel.optimize_parameters

            def optimize_parameters(model, current_iter):
                optimize(model, current_iter)
                if current_iter == KILL_AT:
                    os.kill(os.getpid(), signal.SIGKILL)

            module.DUPruModel.optimize_parameters = optimize_parameters

        spec.loader.exec_module = exec_and_wrap
        return spec


sys.meta_path.insert(0, _KillAfterStep())
'''

SCRIPT_C = """import os

import dupru_basicsr  # noqa: F401  (first: registers DUPruModel, applies the shims)
from basicsr.train import train_pipeline

if __name__ == '__main__':
    train_pipeline(os.getcwd())
"""  # docs/plugin.md, path c


def _opt(name):
    opt = tiny_options(name, 'DUPruModel', pruning={'rounds': ROUNDS, 'iters_per_round': E, 'rate': RATE},
                       total_iter=TOTAL, val_freq=VAL_FREQ, save_freq=SAVE_FREQ, ema_decay=0.9)
    # BasicSR's own loop counts ceil(images / batch) iterations per epoch but its loader drops the last partial
    # batch: with 5 photos and batch 2 it would stop at iteration 10 of 12. 10 samples per epoch divide evenly.
    opt['datasets']['train']['dataset_enlarge_ratio'] = 2
    return opt


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def _run(cmd, cwd, pythonpath, kill_at=None):
    """Run `cmd` in `cwd` with PYTHONPATH `pythonpath` (+ the kill hook when `kill_at`); (returncode, output)."""
    env = dict(os.environ)
    paths = list(pythonpath)
    if kill_at is not None:
        hook_dir = osp.join(str(cwd), '.kill_hook')
        os.makedirs(hook_dir, exist_ok=True)
        with open(osp.join(hook_dir, 'sitecustomize.py'), 'w') as f:
            f.write(KILL_HOOK)
        paths.insert(0, hook_dir)
        env['PLUGIN_TEST_KILL_AT'] = str(kill_at)
    env['PYTHONPATH'] = os.pathsep.join(paths)
    r = subprocess.run(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=600)
    return r.returncode, r.stdout


def _resumed_from(output):
    m = re.search(r'Resuming training from epoch: \d+, iter: (\d+)\.', output)
    return int(m.group(1)) if m else None


def _round_masks(exp, r):
    """Masks of round r (1-based) from masks_round{r}.pth; None for the dense first round."""
    return None if r == 1 else _load(osp.join(exp, 'models', f'masks_round{r}.pth'))['keep_masks']


def _assert_pruned_zero_everywhere(exp):
    """Pruned entries are exactly 0 in params and params_ema of every checkpoint and ticket of the run."""
    checked = 0
    for path in sorted(glob.glob(osp.join(exp, 'models', 'net_g_*.pth'))):
        ckpt = _load(path)
        it = re.search(r'net_g_(\d+|latest)\.pth$', path)
        if 'keep_masks' in ckpt:
            masks = ckpt['keep_masks']
        elif it.group(1) == 'latest':
            masks = _round_masks(exp, ROUNDS)
        else:
            masks = _round_masks(exp, (int(it.group(1)) - 1) // E + 1)
        if masks is None:
            continue
        for key in ('params', 'params_ema'):
            for name, keep in masks.items():
                assert torch.all(ckpt[key][name][~keep] == 0), (path, key, name)
        checked += 1
    assert checked >= 4, checked


def _assert_kept_counts(masks, previous):
    """Layer scope: every tensor loses exactly `rate` % of its survivors (rounded as the pruner does), and keeps
    only former survivors."""
    from dupru_basicsr.pruning import num_to_remove
    for name, keep in masks.items():
        before = int(previous[name].sum()) if previous is not None else keep.numel()
        assert int(keep.sum()) == before - num_to_remove(before, RATE), name
        if previous is not None:
            assert not torch.any(keep & ~previous[name]), name


def _assert_loads_into_stock_msrresnet(exp):
    from basicsr.archs.srresnet_arch import MSRResNet
    ckpt = _load(osp.join(exp, 'models', 'net_g_latest.pth'))
    for key in ('params', 'params_ema'):
        net = MSRResNet(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=4)
        net.load_state_dict(ckpt[key], strict=True)


def _assert_states_hold_pruning(exp):
    """Every training state holds the pruning state, with the round it was saved in and its masks."""
    states = sorted(glob.glob(osp.join(exp, 'training_states', '*.state')))
    assert states
    for path in states:
        it = int(osp.basename(path)[:-len('.state')])
        pruning = _load(path)['pruning']
        assert set(pruning) >= {'pruner', 'rounds', 'round_best', 'finetune_lr', 'config'}, path
        r = (it - 1) // E + 1
        assert pruning['rounds']['round'] == r - 1, path
        assert pruning['config']['round_lengths'] == [E] * ROUNDS and pruning['config']['rate'] == RATE
        masks = _round_masks(exp, r)
        if masks is not None:
            assert all(torch.equal(pruning['pruner']['keep_masks'][k], masks[k]) for k in masks), path
    return states


def _assert_round_tickets(exp, expect_best):
    """Every round leaves net_g_round{r}_last.pth with its masks; _best ones only where a validation was."""
    for r in range(1, ROUNDS + 1):
        last = _load(osp.join(exp, 'models', f'net_g_round{r}_last.pth'))
        assert set(last) == {'params', 'params_ema', 'keep_masks', 'ticket'}
        assert last['ticket']['round'] == r and last['ticket']['iter'] == r * E
        masks = _round_masks(exp, r)
        if masks is not None:
            assert all(torch.equal(last['keep_masks'][k], masks[k]) for k in masks)
        else:
            assert all(bool(m.all()) for m in last['keep_masks'].values())
    best = sorted(int(re.search(r'round(\d+)_best', p).group(1))
                  for p in glob.glob(osp.join(exp, 'models', 'net_g_round*_best.pth')))
    assert best == expect_best


def _assert_continues_reference(exp, ref_exp):
    """What BasicSR's loop guarantees after a mid-round resume, against an uninterrupted run of the same loop."""
    final, ref_final = _load(osp.join(exp, 'models', 'net_g_round3_last.pth')), _load(
        osp.join(ref_exp, 'models', 'net_g_round3_last.pth'))
    assert final['ticket']['round'] == ref_final['ticket']['round'] == ROUNDS
    ours, ref = _round_masks(exp, 2), _round_masks(ref_exp, 2)  # in force when the run was killed
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    _assert_kept_counts(_round_masks(exp, 3), ours)  # made after the resume: same schedule, own weights
    _assert_kept_counts(ours, None)
    _assert_pruned_zero_everywhere(exp)
    _assert_loads_into_stock_msrresnet(exp)


@pytest.fixture(scope='module')
def basicsr_loop_reference(tmp_path_factory):
    """An uninterrupted run of BasicSR's own train_pipeline (path c's script), as a subprocess."""
    root = tmp_path_factory.mktemp('reference_c')
    yml = write_options(_opt('plugin'), root)
    (root / 'train.py').write_text(SCRIPT_C)
    rc, out = _run([PY, 'train.py', '-opt', yml], root, [REPO])
    assert rc == 0, out[-3000:]
    return osp.join(str(root), 'experiments', 'plugin'), out


@pytest.mark.slow
def test_path_a_dupru_train_killed_mid_round_resumes_exactly(tmp_path):
    ref_root = tmp_path / 'reference'
    ref_root.mkdir()
    run_in(ref_root, _opt('plugin_a'))
    ref_exp = osp.join(str(ref_root), 'experiments', 'plugin_a')
    yml = write_options(_opt('plugin_a'), tmp_path)
    cmd = [PY, '-m', 'dupru_basicsr.train', '-opt', yml, '--auto_resume']
    rc, out = _run(cmd, tmp_path, [REPO], kill_at=KILL_AT)
    assert rc == -signal.SIGKILL, out[-3000:]
    rc, out = _run(cmd, tmp_path, [REPO])
    assert rc == 0, out[-3000:]
    assert _resumed_from(out) == 6
    exp = osp.join(str(tmp_path), 'experiments', 'plugin_a')
    # dupru-train saves and validates at every round end too, and its resume is exact
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(exp, 'training_states', '*.state'))) == [
        f'{i}.state' for i in (12, 3, 4, 6, 8, 9)]
    _assert_states_hold_pruning(exp)
    _assert_round_tickets(exp, expect_best=[1, 2, 3])
    for name in ['net_g_latest.pth'] + [f'net_g_round{r}_{k}.pth' for r in (1, 2, 3) for k in ('best', 'last')]:
        ours, ref = _load(osp.join(exp, 'models', name)), _load(osp.join(ref_exp, 'models', name))
        for key in ('params', 'params_ema'):
            assert all(torch.equal(ours[key][k], ref[key][k]) for k in ref[key]), (name, key)
    for r in (2, 3):
        assert all(torch.equal(a, b) for a, b in zip(_round_masks(exp, r).values(), _round_masks(ref_exp, r).values()))
    _assert_pruned_zero_everywhere(exp)
    _assert_loads_into_stock_msrresnet(exp)


@pytest.mark.slow
def test_path_c_project_script_killed_mid_round_resumes(tmp_path, basicsr_loop_reference):
    ref_exp, ref_out = basicsr_loop_reference
    # the option file's frequencies do not divide the round length: the model says what is and is not kept
    assert 'val.val_freq (6) does not divide every round end (iterations [4, 8, 12])' in ref_out
    assert 'round(s) [1] are never validated' in ref_out
    assert 'logger.save_checkpoint_freq (3) does not divide every round end' in ref_out
    yml = write_options(_opt('plugin'), tmp_path)
    (tmp_path / 'train.py').write_text(SCRIPT_C)
    rc, out = _run([PY, 'train.py', '-opt', yml], tmp_path, [REPO], kill_at=KILL_AT)
    assert rc == -signal.SIGKILL, out[-3000:]
    exp = osp.join(str(tmp_path), 'experiments', 'plugin')
    assert sorted(os.listdir(osp.join(exp, 'training_states'))) == ['3.state', '6.state']
    # what a kill inside a save leaves: the temporary files of atomic writes, removed when the resume is accepted
    leftovers = [osp.join(exp, 'models', '.net_g_9.pth.abc123.tmp'), osp.join(exp, 'training_states',
                                                                              '.9.state.def456.tmp')]
    for path in leftovers:
        with open(path, 'wb') as f:
            f.write(b'half a file')
    # the import-time CPU fix reaches basicsr.train.load_resume_state: --auto_resume works on the CPU
    rc, out = _run([PY, 'train.py', '-opt', yml, '--auto_resume'], tmp_path, [REPO])
    assert rc == 0, out[-3000:]
    assert _resumed_from(out) == 6
    assert not any(osp.exists(p) for p in leftovers)
    _assert_states_hold_pruning(exp)
    _assert_round_tickets(exp, expect_best=[2, 3])
    _assert_continues_reference(exp, ref_exp)
    _print_run(exp)


def _make_checkout(root):
    """A throwaway BasicSR checkout: the installed basicsr package folder plus an options/ folder."""
    import basicsr
    checkout = osp.join(str(root), 'BasicSR')
    shutil.copytree(osp.dirname(basicsr.__file__), osp.join(checkout, 'basicsr'),
                    ignore=shutil.ignore_patterns('__pycache__'))
    os.makedirs(osp.join(checkout, 'options', 'train', 'SRResNet_SRGAN'))
    return checkout


def _tree(folder):
    return {p: os.stat(p).st_mtime_ns for p in glob.glob(osp.join(folder, '**', '*'), recursive=True)}


@pytest.mark.slow
def test_path_b_registered_checkout_trains_and_keeps_the_pruning_state(tmp_path, capsys, basicsr_loop_reference):
    from dupru_basicsr import register
    ref_exp, _ = basicsr_loop_reference
    checkout = _make_checkout(tmp_path)
    degradations = osp.join(checkout, 'basicsr', 'data', 'degradations.py')
    original = open(degradations).read().splitlines()
    needs_fix = register.torchvision_needs_fix(checkout)

    assert register.main([checkout]) == 0
    out = capsys.readouterr().out
    assert osp.isfile(osp.join(checkout, 'basicsr', 'models', 'dupru_model.py'))
    copied = sorted(os.listdir(osp.join(checkout, 'options', 'train', 'DUPru')))
    assert 'train_MSRResNet_x4_DUPru.yml' in copied and 'train_MSRResNet_x4_UPru.yml' in copied
    assert open(degradations).read().splitlines() == original  # not without --fix-torchvision
    opt = _opt('plugin')
    yml = write_options(opt, osp.join(checkout, 'options', 'train', 'DUPru'))
    yml_rel = osp.relpath(yml, checkout)
    train = [PY, 'basicsr/train.py', '-opt', yml_rel]
    paths = [checkout, REPO]  # BasicSR's docs: PYTHONPATH="./:${PYTHONPATH}" python basicsr/train.py -opt ...
    if needs_fix:
        assert f'Change that line to "{register.NEW_IMPORT}"' in out and '--fix-torchvision' in out
        rc, log = _run(train, checkout, paths)  # the checkout does not import: degradations comes before our import
        assert rc != 0 and 'functional_tensor' in log, log[-2000:]
        assert not osp.exists(osp.join(checkout, 'experiments'))
        assert register.main([checkout, '--fix-torchvision']) == 0
        assert 'Fixed' in capsys.readouterr().out
        fixed = open(degradations).read().splitlines()
        assert [i for i, (a, b) in enumerate(zip(original, fixed)) if a != b] == [original.index(register.OLD_IMPORT)]
        assert len(fixed) == len(original) and register.NEW_IMPORT in fixed

    rc, log = _run(train, checkout, paths, kill_at=KILL_AT)
    assert rc == -signal.SIGKILL, log[-3000:]
    exp = osp.join(checkout, 'experiments', 'plugin')
    states = _assert_states_hold_pruning(exp)
    assert sorted(osp.basename(p) for p in states) == ['3.state', '6.state']
    assert osp.isfile(osp.join(exp, 'models', 'net_g_round1_last.pth'))
    assert not osp.exists(osp.join(exp, 'models', 'net_g_round2_last.pth'))

    if not torch.cuda.is_available():
        # BasicSR 1.4.2's own load_resume_state (the checkout's __main__) calls CUDA: it fails, and touches nothing
        before = _tree(exp)
        rc, log = _run(train + ['--auto_resume'], checkout, paths)
        assert rc != 0 and 'cuda' in log.lower(), log[-2000:]
        assert _tree(exp) == before
        # the documented CPU route: dupru-train in the checkout resumes the run through DUPruModel.resume_training
        rc, log = _run([PY, '-m', 'dupru_basicsr.train', '-opt', yml_rel, '--auto_resume'], checkout, [REPO])
    else:
        rc, log = _run(train + ['--auto_resume'], checkout, paths)
    assert rc == 0, log[-3000:]
    assert _resumed_from(log) == 6
    _assert_states_hold_pruning(exp)
    _assert_round_tickets(exp, expect_best=[2, 3])  # round 1 ended before the first validation (6)
    _assert_continues_reference(exp, ref_exp)
    with capsys.disabled():
        _print_run(exp)

    assert register.main([checkout, '--remove']) == 0
    out = capsys.readouterr().out
    assert not osp.exists(osp.join(checkout, 'basicsr', 'models', 'dupru_model.py'))
    assert os.listdir(osp.join(checkout, 'options', 'train', 'DUPru')) == [osp.basename(yml)]  # ours are gone
    assert 'Kept' in out


def test_register_refuses_what_is_not_a_checkout_or_not_its_file(tmp_path, capsys):
    from dupru_basicsr import register
    with pytest.raises(SystemExit) as e:
        register.main([str(tmp_path)])
    assert e.value.code == 2
    assert 'is not a BasicSR checkout: basicsr/models/__init__.py is missing' in capsys.readouterr().err
    checkout = tmp_path / 'co'
    (checkout / 'basicsr' / 'models').mkdir(parents=True)
    (checkout / 'basicsr' / 'models' / '__init__.py').write_text('')
    (checkout / 'basicsr' / 'train.py').write_text('')
    (checkout / 'basicsr' / 'models' / 'dupru_model.py').write_text('# somebody else\'s model\n')
    for argv in ([str(checkout)], [str(checkout), '--remove']):
        with pytest.raises(SystemExit) as e:
            register.main(argv)
        assert e.value.code == 2
        assert 'not written by dupru-register' in capsys.readouterr().err
    assert (checkout / 'basicsr' / 'models' / 'dupru_model.py').read_text() == '# somebody else\'s model\n'


def _print_run(exp):
    """The listing the issue's closing note asks for (shown with pytest -s)."""
    print(f'\n{exp}/models:\n  ' + '\n  '.join(sorted(os.listdir(osp.join(exp, 'models')))))
    newest = max(glob.glob(osp.join(exp, 'training_states', '*.state')),
                 key=lambda p: int(osp.basename(p)[:-len('.state')]))
    state = _load(newest)
    print(f'{newest}: {list(state)}; pruning: {list(state["pruning"])}; config: {state["pruning"]["config"]}')


# ------------------------------------------------------------------------------------ construction, resume refusals
def test_bad_pruning_section_fails_when_the_model_is_built_with_the_option_check_message():
    from dupru_basicsr.plugin.model import DUPruModel
    from dupru_basicsr.plugin.option_base import OptionError
    from dupru_basicsr.plugin.pruning_options import check_pruning_options
    for change, message in (({'rate': 150}, 'pruning.rate is 150'),
                            ({'iters_per_round': 5}, 'train.total_iter is 12 but rounds (3) x iters_per_round (5)'),
                            ({'targets': ['bdy.*.weight']}, 'pruning.targets: ')):
        opt = _opt('bad')
        opt['pruning'].update(change)
        opt['is_train'] = True
        with pytest.raises(OptionError) as checked:
            check_pruning_options(opt)
        with pytest.raises(OptionError) as built:
            DUPruModel(opt)  # fails before BaseModel.__init__: nothing is built or loaded
        assert str(built.value) == str(checked.value) and message in str(built.value)


def test_resume_refuses_every_changed_result_option_in_one_message(tmp_path):
    from dupru_basicsr.plugin.option_base import OptionError
    from dupru_basicsr.plugin.pruning_options import check_resume_options, resume_config
    opt = _opt('resume')
    state = {'iter': 6, 'pruning': {'config': resume_config(opt)}}
    assert check_resume_options(opt, state) == []
    same = _opt('resume')  # the same schedule spelled as a list is the same setting
    same['pruning'].pop('rounds'), same['pruning'].pop('iters_per_round')
    same['pruning']['schedule'] = [E] * ROUNDS
    same['pruning']['plugins'] = []  # imports modules only
    assert check_resume_options(same, state) == []
    changed = _opt('resume')
    changed['pruning'].update(eps=1e-5, rewind='none', rate=20, scope='global', method='upru', rounds=2,
                              targets=['body.0.*'])
    changed['path']['resume_state'] = 'experiments/resume/training_states/6.state'
    with pytest.raises(OptionError) as e:
        check_resume_options(changed, state)
    message = str(e.value)
    assert message.startswith('Cannot resume from experiments/resume/training_states/6.state: ')
    for part in ("pruning.method: 'dupru' -> 'upru'", "pruning.targets (resolved patterns): ['body.*.weight'] -> "
                 "['body.0.*']", 'pruning.rate: 30.0 -> 20.0', 'iterations of each round): [4, 4, 4] -> [4, 4]',
                 'pruning.eps: 1e-06 -> 1e-05', "pruning.scope: 'layer' -> 'global'",
                 "pruning.rewind: 'init' -> 'none'"):
        assert part in message, part
    gradual = {'schedule': 'gradual', 'iters_per_round': 12, 'start_iter': 2, 'end_iter': 10,
               'final_sparsity': 0.5, 'frequency': 2}
    a, b = _opt('resume'), _opt('resume')
    a['pruning'].update(gradual), b['pruning'].update(gradual, final_sparsity=0.6, frequency=3)
    for o in (a, b):
        o['pruning'].pop('rounds')
    with pytest.raises(OptionError, match=r'pruning.final_sparsity: 0.5 -> 0.6; pruning.frequency: 2 -> 3\.'):
        check_resume_options(b, {'iter': 6, 'pruning': {'config': resume_config(a)}})
    with pytest.raises(OptionError, match='has no pruning state'):
        check_resume_options(opt, {'iter': 6, 'epoch': 0, 'optimizers': [], 'schedulers': []})


def test_old_state_without_config_is_checked_on_what_it_records(caplog):
    from dupru_basicsr.plugin.option_base import OptionError
    from dupru_basicsr.plugin.pruning_options import check_resume_options
    old = {'pruner': {'method': 'dupru', 'targets': ['body.*.weight'], 'eps': 1e-6, 'scope': 'layer'},
           'rounds': {'lengths': [E] * ROUNDS, 'rate': 30.0, 'rewind_iter': None, 'round': 1}}
    opt = _opt('old')
    unchecked = check_resume_options(opt, {'iter': 6, 'pruning': old})
    assert unchecked[0] == 'pruning.rewind' and 'pruning.frequency' in unchecked
    assert 'does not record pruning.rewind' in caplog.text
    opt['pruning']['eps'] = 1e-4
    with pytest.raises(OptionError, match=r'pruning.eps: 1e-06 -> 0.0001\.'):
        check_resume_options(opt, {'iter': 6, 'pruning': old})


def test_dupru_train_refuses_a_changed_eps_before_writing_anything(tmp_path):
    """issue 17 item 5: a changed eps (or rewind) no longer resumes silently; dupru-train prints one error line."""
    from dupru_basicsr.plugin.option_base import OptionError
    opt = tiny_options('eps', 'DUPruModel', pruning={'rounds': 2, 'iters_per_round': 2, 'rate': 30}, total_iter=4,
                       val_set=None, save_freq=2)
    run_in(tmp_path, dict(opt, train=dict(opt['train'], total_iter=2), pruning=dict(opt['pruning'], rounds=1)))
    exp = osp.join(str(tmp_path), 'experiments', 'eps')
    state = _load(osp.join(exp, 'training_states', '2.state'))
    assert state['pruning']['config']['eps'] == 1e-6
    before = _tree(exp)
    changed = dict(opt, pruning=dict(opt['pruning'], rounds=1, eps=1e-3, rewind='none'),
                   train=dict(opt['train'], total_iter=2))
    with pytest.raises(OptionError, match=r"pruning.eps: 1e-06 -> 0.001; pruning.rewind: 'init' -> 'none'\. "):
        run_in(tmp_path, changed, '--auto_resume')
    assert _tree(exp) == before
    yml = write_options(changed, tmp_path)
    rc, out = _run([PY, '-m', 'dupru_basicsr.train', '-opt', yml, '--auto_resume'], tmp_path, [REPO])
    assert rc == 2 and out.count('error:') == 1 and 'Traceback' not in out, out[-2000:]


def test_importing_dupru_basicsr_changes_nothing_other_models_save_or_load():
    """Only fixes of what crashes on import; BaseModel stays BasicSR's (dupru-train patches it in its own process)."""
    code = '''
import dupru_basicsr, basicsr.train, basicsr.utils.dist_util
from basicsr.models.base_model import BaseModel
from dupru_basicsr.plugin import shims
from dupru_basicsr.plugin.model import DUPruModel
for name in ('save_network', 'load_network', 'save_training_state', 'resume_training', 'model_to_device', 'save'):
    assert getattr(BaseModel, name).__module__ == 'basicsr.models.base_model', name
assert not hasattr(BaseModel, 'training_state')
assert basicsr.utils.dist_util._init_dist_pytorch.__module__ == 'basicsr.utils.dist_util'
assert basicsr.train.load_resume_state is shims.load_resume_state_cpu_safe
for name in ('save_network', 'load_network', 'save_training_state'):
    assert getattr(DUPruModel, name).__module__ == 'dupru_basicsr.plugin.checkpointing', name
print('ok')
'''
    rc, out = _run([PY, '-c', code], REPO, [REPO])
    assert rc == 0 and out.strip().endswith('ok'), out[-2000:]
