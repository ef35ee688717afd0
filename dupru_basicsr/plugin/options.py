"""Checks of the BasicSR-wide options (registered names, devices, scale, the training loop's frequencies, the
pretrained weights), run before anything is written to disk; they call the checks of the `pruning:` section
(`pruning_options`) and of the datasets (`datasets`).

Every error is an `OptionError` that names the option key (or the file) and says how to fix it.
"""
import os.path as osp
import warnings

from dupru_basicsr.plugin.datasets import check_datasets
from dupru_basicsr.plugin.option_base import (OptionError, OptionWarning, as_int, build_network, did_you_mean,
                                              is_pruning_model)
from dupru_basicsr.plugin.pruning_options import check_pruning_options, pruning_section
from dupru_basicsr.plugin.training_values import check_seed, check_training_values
from dupru_basicsr.weights.io import load_checkpoint, odd_state_entry, state_problem, strip_module_prefix


def _check_registered(opt):
    """model_type and network_g.type exist in BasicSR's registries (importing basicsr registers them)."""
    import basicsr.archs  # noqa: F401  (fills ARCH_REGISTRY)
    import basicsr.models  # noqa: F401  (fills MODEL_REGISTRY)
    from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
    for key, registry, value in (('model_type', MODEL_REGISTRY, opt.get('model_type')),
                                 ('network_g.type', ARCH_REGISTRY, (opt.get('network_g') or {}).get('type'))):
        if value is None:
            if key == 'model_type' or opt.get('network_g') is not None:
                raise OptionError(f'{key} is not set; name a registered BasicSR class, e.g. '
                                  f'{"SRModel or DUPruModel" if key == "model_type" else "MSRResNet"}.')
            continue
        if value not in registry:
            raise OptionError(f'{key} is "{value}", which is not registered in BasicSR.'
                              f'{did_you_mean(value, registry.keys())} (Custom classes must be imported before '
                              'training starts.)')


def _check_devices(opt):
    import torch
    if not isinstance(opt.get('deterministic', False), bool):
        raise OptionError(f'deterministic is {opt["deterministic"]!r}; use true (deterministic kernels, no cuDNN '
                          'autotuning, no TF32: CUDA runs repeat bit for bit, slower) or false.')
    num_gpu = opt.get('num_gpu', 0)
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if num_gpu in (None, 'auto'):
        if available > 1 and not opt.get('dist'):
            warnings.warn(f'num_gpu is auto on a machine with {available} GPUs and no launcher: BasicSR wraps the '
                          f'network in DataParallel over all of them and multiplies the batch size and workers by '
                          f'{available}, a different recipe from the one the file describes. Set num_gpu: 1, and use '
                          'torchrun ... --launcher pytorch for several GPUs.', OptionWarning, stacklevel=2)
        return
    if as_int(num_gpu) is None or num_gpu < 0:
        raise OptionError(f'num_gpu is {num_gpu!r}; use a number of GPUs >= 0 (1 for one GPU, 0 for the CPU).')
    if num_gpu > available:
        at_most = f', or at most {available}' if available else ''
        raise OptionError(f'num_gpu is {num_gpu} but this machine has {available} CUDA device(s); set num_gpu: 0 '
                          f'for the CPU (or --force_yml num_gpu=0){at_most}.')


def _check_schedule_options(opt):
    """The BasicSR training-loop options that would otherwise fail (or silently do nothing) mid-run."""
    train = opt.get('train')
    if not isinstance(train, dict):
        raise OptionError('train: section missing; it needs total_iter, optim_g, scheduler and a loss (pixel_opt).')
    total = as_int(train.get('total_iter'))
    if total is None or total < 1:
        raise OptionError(f'train.total_iter is {train.get("total_iter")!r}; set it to the number of training '
                          'iterations (an integer >= 1).')
    logger = opt.get('logger') or {}
    for k in ('print_freq', 'save_checkpoint_freq'):
        v = as_int(logger.get(k))
        if v is None or v < 1:
            raise OptionError(f'logger.{k} is {logger.get(k)!r}; set it to a number of iterations >= 1.')
    if opt.get('val') is not None:
        v = as_int(opt['val'].get('val_freq'))
        if v is None or v < 1:
            raise OptionError(f'val.val_freq is {opt["val"].get("val_freq")!r}; set it to a number of iterations >= 1 '
                              '(or remove the val: section).')
    sched = train.get('scheduler') or {}
    if sched.get('type') == 'CosineAnnealingRestartLR':
        periods, weights = sched.get('periods') or [], sched.get('restart_weights') or [1]
        if not periods or not all(as_int(p) is not None and p > 0 for p in periods):
            raise OptionError(f'train.scheduler.periods is {periods!r}; give a list of positive iteration counts.')
        if len(weights) != len(periods):
            raise OptionError(f'train.scheduler.restart_weights has {len(weights)} entries but periods has '
                              f'{len(periods)}; give one restart weight per period.')
        if not is_pruning_model(opt.get('model_type')) and sum(periods) < total:
            raise OptionError(f'train.scheduler.periods sum to {sum(periods)}, less than train.total_iter ({total}): '
                              'the cosine schedule would end before training does; make the periods sum to '
                              f'{total}.')


def _network_scale(net_opt):
    for k in ('upscale', 'scale'):
        if k in net_opt:
            return net_opt[k]
    return None


def _check_scale(opt):
    scale = opt.get('scale')
    net_scale = _network_scale(opt.get('network_g') or {})
    if scale is None:
        if any((d or {}).get('type') == 'PairedImageDataset' for d in (opt.get('datasets') or {}).values()):
            raise OptionError('scale is not set; PairedImageDataset needs it (the upscaling factor, e.g. scale: 4'
                              + (f', as network_g upscales by {net_scale}' if net_scale else '') + ').')
        return
    if as_int(scale) is None or scale < 1:
        raise OptionError(f'scale is {scale!r}; set it to the integer upscaling factor (e.g. 4).')
    if net_scale is not None and int(scale) != int(net_scale):
        raise OptionError(f'scale is {scale} but network_g upscales by {net_scale}; make them equal.')


# top-level keys this package reads, and those BasicSR 1.4.2 reads or sets itself (its options.py, train.py, models)
OUR_TOP_LEVEL_KEYS = ('deterministic', 'pruning')
BASICSR_TOP_LEVEL_KEYS = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_d',
                          'path', 'train', 'val', 'logger', 'dist_params', 'is_train', 'dist', 'rank', 'world_size',
                          'auto_resume', 'root_path', 'find_unused_parameters', 'use_static_graph', 'suffix',
                          'opt_path', 'amp', 'launcher')


def warn_about_top_level_near_misses(opt):
    """An OptionWarning for each top-level key that neither BasicSR nor this package reads but that is close to one
    of ours (`determinstic: true` would be ignored silently); returns the messages. Other unknown keys are the
    user's (BasicSR ignores them)."""
    import difflib
    messages = []
    for key in opt:
        if key in OUR_TOP_LEVEL_KEYS or key in BASICSR_TOP_LEVEL_KEYS or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, OUR_TOP_LEVEL_KEYS, n=1, cutoff=0.75)
        if close and close[0] not in opt:
            messages.append(f'option {key!r} is read by nobody (BasicSR ignores unknown keys); did you mean '
                            f'{close[0]!r}? (docs/pruning_options.md lists the keys this package reads)')
    for message in messages:
        warnings.warn(message, OptionWarning, stacklevel=2)
    return messages


def check_options(opt):
    """Check a parsed BasicSR option dict before training/testing starts. Raises OptionError.

    Cheap checks first; the data check reads the folder listings and the header of every GT/LR image (seconds for
    DIV2K's 32k sub-images).
    """
    is_train = opt.get('is_train', True)
    warn_about_top_level_near_misses(opt)
    _check_registered(opt)
    _check_devices(opt)
    _check_scale(opt)
    check_seed(opt)
    if is_train:
        _check_schedule_options(opt)
        check_training_values(opt)
        if pruning_section(opt) is not None and not is_pruning_model(opt.get('model_type')):
            raise OptionError(f'pruning: is given but model_type is {opt.get("model_type")}, which ignores it; set '
                              'model_type: DUPruModel or remove the pruning: section.')
        if is_pruning_model(opt.get('model_type')):
            check_pruning_options(opt)
    check_datasets(opt)


def check_pretrained_network(opt):
    """`path.pretrain_network_g`, when set, is a checkpoint that loads into network_g as BasicSR will load it (same
    param key fallback, same strictness). Raises OptionError naming the file; run it before anything is written."""
    path = (opt.get('path') or {}).get('pretrain_network_g')
    if path is None or not opt.get('network_g'):
        return
    key = 'path.pretrain_network_g'
    if not osp.isfile(path):
        raise OptionError(f'{key}: "{path}" does not exist; point it at a network checkpoint (e.g. '
                          'experiments/<name>/models/net_g_latest.pth) or remove the key.')
    from dupru_basicsr.weights.compressed import is_compressed
    try:
        ckpt = load_checkpoint(path)
    except RuntimeError as e:
        raise OptionError(f'{key}: {e}') from None
    if is_compressed(ckpt):
        raise OptionError(f'{key}: "{path}" is a compressed file made by dupru-export, which BasicSR cannot load; '
                          'point it at the original checkpoint (net_g_*.pth).')
    param_key = opt['path'].get('param_key_g', 'params')
    if isinstance(ckpt, dict) and param_key is not None and param_key not in ckpt and 'params' in ckpt:
        param_key = 'params'  # what BasicSR's load_network falls back to
    state = ckpt.get(param_key) if isinstance(ckpt, dict) and param_key is not None else ckpt
    if not isinstance(state, dict) or not state or odd_state_entry(state) is not None:
        raise OptionError(f'{key}: "{path}" holds no network weights under "{param_key}" (a mapping of parameter '
                          'names to tensors); point it at a BasicSR network checkpoint (net_g_*.pth), or set '
                          'path.param_key_g.')
    problem = state_problem(state)
    if problem is not None:
        raise OptionError(f'{key}: "{path}": its "{param_key}" {problem}.')
    state = strip_module_prefix(state)
    try:
        build_network(opt).load_state_dict(state, strict=opt['path'].get('strict_load_g', True))
    except RuntimeError as e:
        detail = ' '.join(line.strip() for line in str(e).splitlines()[:2])[:300]
        raise OptionError(f'{key}: "{path}" does not fit network_g ({detail}); point it at weights of this '
                          'architecture or fix network_g.') from None
