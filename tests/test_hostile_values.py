"""Hostile values, one class per row: every option value BasicSR or torch would reject only mid-run (or use
silently: a NaN learning rate trains to the end), every shape a checkpoint file can have, every non-finite number
(settings and weights). Each is one `dupru-<command>: error:` line, exactly as below, exit status 2, before anything
is written (the folder is byte-for-byte unchanged)."""
import glob
import os

import pytest
import torch

from conftest import shared_pair, snapshot_tree, write_options
from test_reliability import _cli, _dupru_opt
from test_reliability_v3 import _refused

CKPT = '(experiments/<name>/models/net_g_*.pth)'
DIVERGED = ('holds non-finite weights (conv_first.weight: 1 NaN, 0 infinite of 432 values): the run that saved it '
            'diverged; use an earlier checkpoint (e.g. the best one of an earlier round)')
SEED = 'give an integer from 0 to 4294967295 (e.g. manual_seed: 0), or remove the key for a random seed.'
TARGETS = ("pruning.targets must be a preset (body or whole) or a non-empty list of parameter name patterns, e.g. "
           "['body.*.weight'].")
LR = '> 0 (e.g. !!float 2e-4).'
NO_STATE = 'has no usable "params_ema" / "params" state dict'

# (command, arguments after -opt for train/test, the whole error text after "dupru-<command>: error: ")
HOSTILE = [
    # the optimizer, the EMA, the losses, the scheduler: non-finite, out of range, text
    ('train', ['train:optim_g:lr=.nan'], f'train.optim_g.lr is nan; it must be a finite number {LR}'),
    ('train', ['train:optim_g:lr=.inf'], f'train.optim_g.lr is inf; it must be a finite number {LR}'),
    ('train', ['train:optim_g:lr=-1.0'], 'train.optim_g.lr is -1.0; it must be > 0 (e.g. !!float 2e-4).'),
    ('train', ['train:optim_g:lr="abc"'], "train.optim_g.lr is 'abc'; it must be a number > 0 (e.g. !!float 2e-4)."),
    ('train', ['train:optim_g:lr=2e-4'], "train.optim_g.lr is '2e-4'; it must be a number > 0 (e.g. !!float 2e-4). "
     "'2e-4' was read as text: in the option file write it with a dot and a signed exponent (e.g. 1.0e-5), with "
     '--force_yml as !!float2e-4.'),
    ('train', ['train:optim_g:betas=[0.9,1.5]'],
     'train.optim_g.betas[1] is 1.5; it must be >= 0 and < 1 (e.g. [0.9, 0.99]).'),
    ('train', ['train:optim_g:weight_decay=-1.0'], 'train.optim_g.weight_decay is -1.0; it must be >= 0 (e.g. 0).'),
    ('train', ['train:ema_decay=1.5'], 'train.ema_decay is 1.5; it must be >= 0 and < 1 (e.g. 0.999).'),
    ('train', ['train:ema_decay=.nan'],
     'train.ema_decay is nan; it must be a finite number >= 0 and < 1 (e.g. 0.999).'),
    ('train', ['train:pixel_opt:loss_weight=.nan'],
     'train.pixel_opt.loss_weight is nan; it must be a finite number >= 0 (e.g. 1.0).'),
    ('train', ['train:scheduler:gamma=.nan'],
     'train.scheduler.gamma is nan; it must be a finite number > 0 (e.g. 0.5).'),
    ('train', ['train:scheduler:milestones="x"'],
     "train.scheduler.milestones is 'x'; give a list of iteration numbers (e.g. [250000, 500000])."),
    # the seed: numpy's range, whole numbers only
    ('train', ['manual_seed=-1'], f'manual_seed is -1; {SEED}'),
    ('train', ['manual_seed=4294967296'], f'manual_seed is 4294967296; {SEED}'),
    ('train', ['manual_seed="abc"'], f"manual_seed is 'abc'; {SEED}"),
    ('train', ['manual_seed=1.5'], f'manual_seed is 1.5; {SEED}'),
    ('test', ['manual_seed=-1'], f'manual_seed is -1; {SEED}'),
    # data sizes
    ('train', ['datasets:train:gt_size=-4'], 'datasets.train.gt_size is -4; it must be a positive multiple of scale '
     '(4) so that GT and LR crops match, e.g. 4.'),
    ('train', ['datasets:train:batch_size_per_gpu=0'],
     'datasets.train.batch_size_per_gpu is 0; set it to an integer >= 1.'),
    # the pruning: section's numbers and types
    ('train', ['pruning:eps=.inf'], 'pruning.eps is inf; it must be a finite number >= 0 (the paper uses 1.0e-6).'),
    ('train', ['pruning:eps=.nan'], 'pruning.eps is nan; it must be a finite number >= 0 (the paper uses 1.0e-6).'),
    ('train', ['pruning:rate=.nan'], 'pruning.rate is nan; it is the percent of surviving weights removed per round '
     'and must lie strictly between 0 and 100 (the paper uses 10).'),
    ('train', ['pruning:targets=true'], TARGETS),
    ('train', ['pruning:targets=5'], TARGETS),
    # checkpoints of every odd shape, and weights that are not finite
    ('export', ['tensor.pth', '--onnx', 'a.onnx'], f'tensor.pth {NO_STATE} (it holds a Tensor): pass a BasicSR network '
     f'checkpoint {CKPT} or a file written by dupru-export.'),
    ('export', ['tensor.pth', '--mnn', 'a.mnn'], f'tensor.pth {NO_STATE} (it holds a Tensor): pass a BasicSR network '
     f'checkpoint {CKPT} or a file written by dupru-export.'),
    ('export', ['noparams.pth', '--onnx', 'a.onnx'], f"noparams.pth {NO_STATE} (it holds keys ['other']): pass a "
     f'BasicSR network checkpoint {CKPT} or a file written by dupru-export.'),
    ('export', ['ema_tensor.pth', '--onnx', 'a.onnx'], 'ema_tensor.pth: its "params_ema" is a Tensor, not a state dict '
     f'of names and tensors; pass a BasicSR network checkpoint {CKPT} or a file written by dupru-export.'),
    ('export', ['ema_tensor.pth', '--mnn', 'a.mnn'], 'ema_tensor.pth: its "params_ema" is a Tensor, not a state dict '
     f'of names and tensors; pass a BasicSR network checkpoint {CKPT} or a file written by dupru-export.'),
    ('export', ['tensor.pth', '--out', 'a.pth'], 'tensor.pth has no usable "params" / "params_ema" state dict (nothing '
     f'of the kind): pass a BasicSR network checkpoint {CKPT}.'),
    ('export', ['nan.pth', '--out', 'a.pth'], 'nan.pth has no usable "params" / "params_ema" state dict (params: '
     'non-finite weights (conv_first.weight: 1 NaN, 0 infinite of 432 values): the run that saved it diverged): pass '
     f'a BasicSR network checkpoint {CKPT}.'),
    ('export', ['nan.pth', '--onnx', 'a.onnx'], f'nan.pth: its "params" {DIVERGED}; pass a BasicSR network checkpoint '
     f'{CKPT} or a file written by dupru-export.'),
    ('test', ['path:pretrain_network_g=nan.pth'], f'path.pretrain_network_g: "nan.pth": its "params" {DIVERGED}.'),
    ('train', ['path:pretrain_network_g=nan.pth'], f'path.pretrain_network_g: "nan.pth": its "params" {DIVERGED}.'),
    ('test', ['path:pretrain_network_g=ema_tensor.pth', 'path:param_key_g=params_ema'],
     'path.pretrain_network_g: "ema_tensor.pth" holds no network weights under "params_ema" (a mapping of parameter '
     'names to tensors); point it at a BasicSR network checkpoint (net_g_*.pth), or set path.param_key_g.'),
    ('compare', ['nan.pth', '--dataset-dirs', 'v=gt:lr'],
     f'nan.pth: its "params" {DIVERGED}; pass a BasicSR network checkpoint (net_g_*.pth).'),
    ('upscale', ['--model', 'nan.pth', '-i', 'lr', '-o', 'out'], f'nan.pth: its "params" {DIVERGED}; pass a BasicSR '
     f'network checkpoint {CKPT} or a file written by dupru-export.'),
]


def _checkpoints(folder):
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.manual_seed(0)
    state = MSRResNet(num_feat=16, num_block=2).state_dict()
    torch.save(torch.zeros(3), folder / 'tensor.pth')
    torch.save({'other': state}, folder / 'noparams.pth')
    torch.save({'params_ema': torch.zeros(3), 'params': state}, folder / 'ema_tensor.pth')
    diverged = {k: v.clone() for k, v in state.items()}
    diverged['conv_first.weight'][0, 0, 0, 0] = float('nan')
    torch.save({'params': diverged}, folder / 'nan.pth')


@pytest.mark.parametrize('command, args, message', HOSTILE, ids=[' '.join([c, *a])[:70] for c, a, _ in HOSTILE])
def test_hostile_value_is_one_exact_error_line_before_anything_is_written(tmp_path, command, args, message):
    _checkpoints(tmp_path)
    gt, lr = shared_pair('val')
    os.symlink(gt, tmp_path / 'gt')
    os.symlink(lr, tmp_path / 'lr')
    yml = write_options(_dupru_opt('hostile'), tmp_path)
    before = snapshot_tree(tmp_path)
    argv = ['-opt', yml, '--force_yml', *args] if command in ('train', 'test') else args
    line = _refused(_cli(command, argv, tmp_path), f'dupru-{command}')
    assert line == f'dupru-{command}: error: {message}'
    assert snapshot_tree(tmp_path) == before


def test_a_sparsity_that_is_not_finite_is_refused(tmp_path):
    opt = _dupru_opt('hostile')
    del opt['pruning']['rate']
    opt['pruning']['sparsity'] = float('nan')
    yml = write_options(opt, tmp_path)
    before = snapshot_tree(tmp_path)
    line = _refused(_cli('train', ['-opt', yml], tmp_path), 'dupru-train')
    assert line.startswith('dupru-train: error: pruning.sparsity is nan;'), line
    assert snapshot_tree(tmp_path) == before


def test_a_dupru_state_resumed_by_another_model_is_refused(tmp_path):
    """SRModel would load the weights and drop the masks: the pruned weights would grow back."""
    yml = write_options(_dupru_opt('run'), tmp_path)
    assert _cli('train', ['-opt', yml], tmp_path).returncode == 0
    state = sorted(glob.glob(str(tmp_path / 'experiments' / 'run' / 'training_states' / '*.state')))[-1]
    stock = _dupru_opt('run')
    stock['model_type'] = 'SRModel'
    del stock['pruning']
    stock['path']['resume_state'] = state
    yml = write_options(stock, tmp_path / 'experiments')
    before = snapshot_tree(tmp_path)
    line = _refused(_cli('train', ['-opt', yml], tmp_path), 'dupru-train')
    assert line == (f'dupru-train: error: path.resume_state: {state} was written by a DUPruModel run (it holds its '
                    'pruning state and masks); model_type SRModel would drop them and let the pruned weights grow '
                    'back. Resume it with model_type: DUPruModel and its pruning: section, or start a new stock run '
                    'from its weights (path.pretrain_network_g: a net_g_*.pth of that run, under another name).')
    assert snapshot_tree(tmp_path) == before


@pytest.mark.parametrize('module, args, message', [
    ('demo', ['--seed', '-1', '--budget', 'tiny', '--out', 'd'],
     '--seed -1: give an integer from 0 to 4294967295 (BasicSR seeds numpy with it).'),
    ('study', ['--preset', 'smoke', '--seeds', '0', '4294967296', '--out', 's', '--train-hr', '.', '--data-root', '.'],
     '--seeds / --extra-seeds 4294967296: a seed is an integer from 0 to 4294967295 (BasicSR seeds numpy with it).'),
    ('upscale', ['--model', 'garbage.pth', '-i', 'img.png', '-o', 'o'],
     'Cannot read garbage.pth (UnpicklingError: it holds what a weights-only load refuses: Unsupported operand 103); '
     'the file is truncated or not a PyTorch checkpoint.'),
    ('compare', ['garbage.pth', '--dataset-dirs', 'v=.:.'], 'Cannot read checkpoint garbage.pth: UnpicklingError: it '
     'holds what a weights-only load refuses: Unsupported operand 103'),
])
def test_seeds_of_the_commands_and_an_unreadable_checkpoint_are_one_line(tmp_path, module, args, message):
    (tmp_path / 'garbage.pth').write_bytes(b'garbage')
    (tmp_path / 'img.png').write_bytes(b'')
    before = snapshot_tree(tmp_path)
    line = _refused(_cli(module, args, tmp_path), f'dupru-{module}')
    assert line == f'dupru-{module}: error: {message}'
    assert snapshot_tree(tmp_path) == before
