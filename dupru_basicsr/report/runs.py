"""Finding the runs to compare: experiment folders and their checkpoints, tickets, logs, network and pruning
settings (from the saved training state, a ticket or the option copy), or single .pth files."""
import glob
import os.path as osp
import re
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import torch
import yaml

from dupru_basicsr.report import CompareError
from dupru_basicsr.weights.arch import ArchError, infer_msrresnet_arch
from dupru_basicsr.weights.io import load_checkpoint, load_failure, state_problem, strip_module_prefix


_ITER_CKPT_RE = re.compile(r'^net_g_(\d+)\.pth$')
_TICKET_RE = re.compile(r'^net_g_round(\d+)_best\.pth$')
_LOSS_LINE_RE = re.compile(r'iter:\s*([\d,]+).*?\bl_pix:\s*([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))')


@dataclass
class ModelEntry:
    """One run to compare: where its weights came from and how to build the network."""
    label: str
    method: str  # stock | dupru | upru | imp | <model_type> | checkpoint
    source: str  # what the user passed (experiment folder or .pth)
    checkpoint: str  # the file the weights were read from
    param_key: str  # params_ema | params | state_dict
    arch: dict  # MSRResNet keyword arguments
    exp_dir: Optional[str] = None
    rate: Optional[float] = None  # pruning.rate of a pruned experiment (Fig. 5)
    settings_from: Optional[str] = None  # the file method and rate were read from
    unfinished: Optional[str] = None  # 'iteration 17 of 20' for a run without net_g_latest.pth
    tickets: List[str] = field(default_factory=list)  # per-round best checkpoints (Fig. 4)
    logs: List[str] = field(default_factory=list)  # BasicSR train logs (training curves)
    state_dict: dict = field(default=None, repr=False)

    def info(self):
        return {k: v for k, v in asdict(self).items() if k != 'state_dict'}


def read_checkpoint(path):
    """The package's one checked load (CRC, `weights_only`), failing with a CompareError that names the file."""
    try:
        return load_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user-facing error
        cause = e.__cause__ or e
        raise CompareError(f'Cannot read checkpoint {path}: {type(cause).__name__}: {load_failure(cause)}') from e


def _read_yaml(path):
    try:
        with open(path, 'r') as f:
            opt = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise CompareError(f'Cannot read option file {path}: {e}') from e
    if not isinstance(opt, dict):
        raise CompareError(f'Option file {path} is not a YAML mapping.')
    return opt


def select_state_dict(ckpt, path):
    """The network weights of a checkpoint: `params_ema` when present (what SRModel evaluates), else `params`.

    Also accepts a bare state dict. Returns (state_dict, key) with DataParallel's `module.` prefix removed, as
    BasicSR's `load_network` does.
    """
    if isinstance(ckpt, dict) and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        state, key = ckpt, 'state_dict'
    else:
        for key in ('params_ema', 'params'):
            if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
                state = ckpt[key]
                break
        else:
            keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
            raise CompareError(f'{path} holds no network weights ("params_ema", "params" or a state dict); found '
                               f'{keys}. Is it a BasicSR training state (*.state) rather than a net_g_*.pth?')
    problem = state_problem(state)
    if problem is not None:
        raise CompareError(f'{path}: its "{key}" {problem}; pass a BasicSR network checkpoint (net_g_*.pth).')
    return strip_module_prefix(state), key


def arch_from_option(opt, path, scale):
    """MSRResNet keyword arguments from an option file's `network_g`; checks the type and the scale."""
    net_opt = dict(opt.get('network_g') or {})
    net_type = net_opt.pop('type', None)
    if net_type != 'MSRResNet':
        raise CompareError(f'{path}: network_g type is {net_type!r}, not MSRResNet; dupru-compare evaluates BasicSR '
                           'MSRResNet networks only.')
    arch = {'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 16, 'upscale': 4}  # MSRResNet defaults
    arch.update({k: v for k, v in net_opt.items() if k in arch})
    opt_scale = opt.get('scale', arch['upscale'])
    for what, value in (('scale', opt_scale), ('network_g.upscale', arch['upscale'])):
        if int(value) != scale:
            raise CompareError(f'{path}: {what} is {value} but --scale is {scale}; compare runs of one scale at a '
                               'time (pass --scale to match).')
    return arch


def _weights_arch(state_dict, path, scale):
    """MSRResNet arguments read from the weights themselves; a CompareError unless MSRResNet at `scale`."""
    try:
        arch = infer_msrresnet_arch(state_dict, path)
    except ArchError as e:
        raise CompareError(f'{e} dupru-compare evaluates BasicSR MSRResNet networks only.') from None
    if arch['upscale'] != scale:
        raise CompareError(f'{path} holds an x{arch["upscale"]} MSRResNet but --scale is {scale}; compare runs of one '
                           'scale at a time (pass --scale to match).')
    return arch


def _method_from_option(opt):
    """'stock' for SRModel, the pruning method for DUPruModel (or any run with a pruning: section)."""
    from dupru_basicsr.plugin.pruning_options import PruningConfig, pruning_section
    model_type = opt.get('model_type', 'SRModel')
    section = pruning_section(opt)
    if isinstance(section, dict) or model_type == 'DUPruModel':
        pruning = section if isinstance(section, dict) else {}
        rate = pruning.get('rate', PruningConfig.rate)
        return str(pruning.get('method', PruningConfig.method)), float(rate)
    if model_type == 'SRModel':
        return 'stock', None
    return str(model_type).lower(), None


def saved_pruning_settings(exp_dir):
    """(method, rate, file) of a pruned run as its own checkpoints record them, or None.

    The option copy in the folder is what the last start of the run wrote, which need not be what trained it; the
    pruning state in the newest readable `training_states/<iter>.state` (method and rate) and, failing that, the
    newest ticket `models/net_g_round<r>_best.pth` (method; rate when it records one) are what the run used.
    """
    from dupru_basicsr.plugin.resume import load_training_state
    states = [(int(m.group(1)), p) for p in glob.glob(osp.join(glob.escape(exp_dir), 'training_states', '*.state'))
              if (m := re.match(r'^(\d+)\.state$', osp.basename(p)))]
    for _, path in sorted(states, reverse=True):
        try:
            pruning = load_training_state(path).get('pruning')
            rate = (pruning.get('config') or {}).get('rate', pruning['rounds'].get('rate'))  # older states: rounds
            return str(pruning['pruner']['method']), float(rate), path
        except Exception:  # noqa: BLE001 - unreadable, or not a pruned run's state: try the next source
            continue
    for path in reversed(find_tickets(exp_dir)):
        try:
            ticket = read_checkpoint(path)['ticket']
            rate = ticket.get('rate')
            return str(ticket['method']), None if rate is None else float(rate), path
        except Exception:  # noqa: BLE001
            continue
    return None


def find_option_file(exp_dir):
    """The option YAML BasicSR copied into the experiment folder (the newest if there are several)."""
    found = glob.glob(osp.join(exp_dir, '*.yml')) + glob.glob(osp.join(exp_dir, '*.yaml'))
    return max(found, key=osp.getmtime) if found else None


def find_checkpoint(exp_dir):
    """`models/net_g_latest.pth`, else the `net_g_<iter>.pth` with the highest iteration."""
    models_dir = osp.join(exp_dir, 'models')
    latest = osp.join(models_dir, 'net_g_latest.pth')
    if osp.isfile(latest):
        return latest
    iters = [(int(m.group(1)), p) for p in glob.glob(osp.join(models_dir, 'net_g_*.pth'))
             if (m := _ITER_CKPT_RE.match(osp.basename(p)))]
    if not iters:
        raise CompareError(f'No checkpoint in experiment folder {exp_dir}: expected {latest} or '
                           f'{models_dir}/net_g_<iter>.pth. Train the run first (dupru-train) or pass a .pth file.')
    return max(iters)[1]


def ticket_round(path):
    """The round r of a ticket file `net_g_round{r}_best.pth`."""
    return int(_TICKET_RE.match(osp.basename(path)).group(1))


def find_tickets(exp_dir):
    """Per-round best checkpoints `models/net_g_round{r}_best.pth` written by DUPruModel, sorted by round."""
    found = [(int(m.group(1)), p) for p in glob.glob(osp.join(exp_dir, 'models', 'net_g_round*_best.pth'))
             if (m := _TICKET_RE.match(osp.basename(p)))]
    return [p for _, p in sorted(found)]


def load_model_entry(source, scale, arch_opt=None):
    """A ModelEntry for an experiment folder or a single .pth checkpoint (see the module docstring)."""
    source = str(source)
    if osp.isdir(source):
        exp_dir = source.rstrip('/\\') or source
        ckpt_path = find_checkpoint(exp_dir)
        opt_path = find_option_file(exp_dir)
        opt = _read_yaml(opt_path) if opt_path else {}
        state, key = select_state_dict(read_checkpoint(ckpt_path), ckpt_path)
        inferred = _weights_arch(state, ckpt_path, scale)  # a clear error for non-MSRResNet weights
        if opt_path:
            arch = arch_from_option(opt, opt_path, scale)
            method, rate = _method_from_option(opt)
        else:
            arch, (method, rate) = inferred, ('checkpoint', None)
        settings_from = opt_path
        saved = saved_pruning_settings(exp_dir)
        if saved is not None:
            saved_method, saved_rate, settings_from = saved
            # a ticket without a rate: the option copy's rate only if it describes the same method
            rate = saved_rate if saved_rate is not None or saved_method != method else rate
            method = saved_method
        name = osp.basename(osp.abspath(exp_dir))
        logs = sorted(glob.glob(osp.join(exp_dir, 'train_*.log')), key=osp.getmtime)
        unfinished = None
        match = _ITER_CKPT_RE.match(osp.basename(ckpt_path))
        if match:  # no net_g_latest.pth: the run stopped before its end
            total = (opt.get('train') or {}).get('total_iter') if isinstance(opt, dict) else None
            unfinished = f'iteration {int(match.group(1))}' + (f' of {total}' if total else '')
        label = f'{method} ({name})' + (f' [unfinished: {unfinished}]' if unfinished else '')
        return ModelEntry(label=label, method=method, source=source, checkpoint=ckpt_path, param_key=key, arch=arch,
                          exp_dir=exp_dir, rate=rate, settings_from=settings_from, unfinished=unfinished,
                          tickets=find_tickets(exp_dir), logs=logs, state_dict=state)
    if not osp.isfile(source):
        raise CompareError(f'{source} is neither an experiment folder nor a checkpoint file.')
    ckpt = read_checkpoint(source)
    state, key = select_state_dict(ckpt, source)
    inferred = _weights_arch(state, source, scale)
    method, rate = 'checkpoint', None
    if arch_opt:
        opt = _read_yaml(arch_opt)
        arch = arch_from_option(opt, arch_opt, scale)
        if 'model_type' in opt or 'pruning' in opt:
            method, rate = _method_from_option(opt)
    else:
        arch = inferred
    if isinstance(ckpt, dict) and isinstance(ckpt.get('ticket'), dict) and ckpt['ticket'].get('method'):
        method = str(ckpt['ticket']['method'])
    stem = osp.splitext(osp.basename(source))[0]
    label = stem if method == 'checkpoint' else f'{method} ({stem})'
    return ModelEntry(label=label, method=method, source=source, checkpoint=source, param_key=key, arch=arch,
                      rate=rate, state_dict=state)


def parse_train_logs(paths):
    """(iterations, l_pix) from BasicSR train logs, sorted by iteration; a resumed run's later log wins."""
    points = {}
    for path in paths:
        with open(path, 'r', errors='replace') as f:
            for line in f:
                m = _LOSS_LINE_RE.search(line)
                if m:
                    points[int(m.group(1).replace(',', ''))] = float(m.group(2))
    iters = sorted(points)
    return {'iter': iters, 'l_pix': [points[i] for i in iters], 'logs': list(paths)}
