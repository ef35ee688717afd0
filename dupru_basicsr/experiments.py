"""Experiments run by the demo and the study: one BasicSR option dict per run, and training it in a folder.

The demo (`dupru-demo`) and the study (`dupru-study`) train several runs with the same data, budget and LR curve;
this is the one place that says how such a run is configured, where its files go and how it is resumed.
"""
import contextlib
import os
import os.path as osp
import sys
import time

import yaml
from tqdm import tqdm

from dupru_basicsr.pruning import DEFAULT_TARGETS
from dupru_basicsr.utils.devices import check_device  # noqa: F401  (dupru-demo imports it from here)


def gradual_schedule(total, final_sparsity):
    """The gradual pruning of the demo and the study: the cubic ramp from 10 % to 70 % of a `total`-iteration run in
    12 steps (fewer on a tiny budget), to `final_sparsity`; the `pruning:` keys of `schedule: gradual`."""
    start = max(1, total // 10)
    end = max(start + 1, total * 7 // 10)
    return dict(start_iter=start, end_iter=end, frequency=max(1, (end - start) // 12), final_sparsity=final_sparsity)


def finetune_schedule(total, final_sparsity):
    """Gradual pruning of a trained network while it is fine-tuned for `total` iterations: the weights already carry
    what they learnt, so pruning starts at once (iteration 1) and ends at 60 % of the run, in 12 steps, leaving 40 %
    to recover at the final sparsity; the `pruning:` keys of `schedule: gradual`."""
    end = max(2, total * 6 // 10)
    return dict(start_iter=1, end_iter=end, frequency=max(1, (end - 1) // 12), final_sparsity=final_sparsity)


def make_options(method, data, preset, name, device_gpus, seed=0, rewind='init', total_iter=None, gradual=None,
                 restarts=True, rate=None, targets=DEFAULT_TARGETS, scope='layer', pretrained=None, lr=None,
                 granularity='element'):
    """A BasicSR option dict for one run: stock SRModel (`total_iter` defaults to rounds x iters; with `restarts`
    the pruned runs' LR curve, a cosine restarted every `iters`, else one cosine over the whole run) or DUPruModel
    with the given freeze `method`, `rewind` and `rate` (% of the survivors per round, default the preset's), or
    `gradual` pruning settings (start_iter, end_iter, final_sparsity, frequency; one cosine over the whole run).
    `targets` (patterns or a preset name: body / whole) and `scope` go to the `pruning:` section; `pretrained`: a
    BasicSR checkpoint (`params`) the run starts from (path.pretrain_network_g); `lr` overrides the preset's;
    `granularity`: pruning.granularity (element, or oc_block<N>)."""
    lr = preset['lr'] if lr is None else lr
    targets = targets if isinstance(targets, str) else list(targets)
    rounds, iters = preset['rounds'], preset['iters']
    total = total_iter or rounds * iters
    if method == 'stock' or gradual:
        periods = [iters] * (total // iters) if total % iters == 0 and restarts and not gradual else [total]
    else:
        periods = [iters]  # one round; the schedule restarts every round
    opt = {
        'name': name,
        'model_type': 'SRModel' if method == 'stock' else 'DUPruModel',
        'scale': 4,
        'num_gpu': device_gpus,
        'manual_seed': seed,
        'datasets': {
            'train': {
                'name': 'skimage_train', 'type': 'PairedImageDataset',
                'dataroot_gt': data['train']['gt_sub'], 'dataroot_lq': data['train']['lr_sub'][4],
                'filename_tmpl': '{}', 'io_backend': {'type': 'disk'},
                'gt_size': preset['gt_size'], 'use_hflip': True, 'use_rot': True,
                'num_worker_per_gpu': 0 if device_gpus == 0 else 4, 'batch_size_per_gpu': preset['batch'],
                'dataset_enlarge_ratio': 10, 'prefetch_mode': None,
            },
            'val': {
                'name': 'skimage_val', 'type': 'PairedImageDataset',
                'dataroot_gt': data['val']['gt'], 'dataroot_lq': data['val']['lr'][4], 'io_backend': {'type': 'disk'},
            },
        },
        'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': preset['num_feat'],
                      'num_block': preset['num_block'], 'upscale': 4},
        'path': {'pretrain_network_g': pretrained, 'param_key_g': 'params', 'strict_load_g': True,
                 'resume_state': None},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': lr, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            # a cosine from lr to 1% of it: restarted every E iterations (rounds; stock with `restarts`) or once
            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': periods,
                          'restart_weights': [1] * len(periods), 'eta_min': lr / 100},
            'total_iter': total,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {
            'val_freq': iters, 'save_img': False,
            'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True},
                        'ssim': {'type': 'calculate_ssim', 'crop_border': 4, 'test_y_channel': True}},
        },
        'logger': {'print_freq': max(1, iters // 5), 'save_checkpoint_freq': iters, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }
    if gradual:
        opt['pruning'] = {'method': method, 'targets': targets, 'schedule': 'gradual', 'rounds': 1,
                          'iters_per_round': total, 'eps': 1e-6, 'scope': scope, 'rewind': 'none', **gradual}
    elif method != 'stock':
        opt['pruning'] = {'method': method, 'targets': targets, 'rate': rate or preset['rate'],
                          'rounds': rounds, 'iters_per_round': iters, 'eps': 1e-6, 'scope': scope, 'rewind': rewind}
    if granularity != 'element' and 'pruning' in opt:
        opt['pruning']['granularity'] = granularity
    return opt


def train_one(opt_path, root, label, total_iters, resume, progress=True, on_iter=None):
    """Run `dupru_basicsr.train` on one option file with a progress bar instead of BasicSR's console log (the full
    log is in the experiment folder); `on_iter(it, total)`, if given, is called after every iteration too."""
    from dupru_basicsr.train import train_pipeline
    bar = tqdm(total=total_iters, desc=f'Train {label:6s}', unit='it', disable=not progress, file=sys.stderr)
    listener = on_iter

    def on_iter(it, total):
        bar.n = it
        bar.refresh()
        if listener is not None:
            listener(it, total)

    argv = sys.argv
    sys.argv = [argv[0], '-opt', opt_path] + (['--auto_resume'] if resume else [])
    try:
        with open(os.devnull, 'w') as devnull, contextlib.redirect_stdout(devnull), \
                contextlib.redirect_stderr(devnull):
            train_pipeline(root, on_iter=on_iter)
    finally:
        sys.argv = argv
        bar.close()


def train_experiment(opt, root, label, progress=True, on_iter=None):
    """Write `opt` to <root>/options/<name>.yml and train it into <root>/experiments/<name>: skipped when the run
    finished (models/net_g_latest.pth exists), resumed when an interrupted one left training states; `on_iter(it,
    total)` is called after every iteration. Returns (experiment folder, seconds spent training, or None when
    skipped)."""
    name = opt['name']
    opt_path = osp.join(root, 'options', f'{name}.yml')
    os.makedirs(osp.dirname(opt_path), exist_ok=True)
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    exp = osp.join(root, 'experiments', name)
    if osp.isfile(osp.join(exp, 'models', 'net_g_latest.pth')):
        return exp, None
    start = time.time()
    train_one(opt_path, root, label, opt['train']['total_iter'], osp.isdir(osp.join(exp, 'training_states')),
              progress, on_iter)
    return exp, time.time() - start
