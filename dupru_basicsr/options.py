"""Checks of BasicSR options and the `pruning:` section, run before anything is written to disk.

Every error is an `OptionError` that names the option key (or the file) and says how to fix it.
"""
import difflib
import os.path as osp
import re
from dataclasses import dataclass, field, fields
from typing import List, Optional

DEFAULT_TARGETS = ('body.*.weight', )
METHODS = ('dupru', 'upru', 'imp')
SCOPES = ('layer', 'global')
_REWIND_RE = re.compile(r'^(init|none|reinit|iter_(\d+))$')


class OptionError(ValueError):
    """A wrong or inconsistent option; the message names the key and the fix."""


@dataclass
class PruningConfig:
    """The `pruning:` section of a BasicSR option file (defaults reproduce the paper's DUPru)."""
    method: str = 'dupru'  # dupru (|W| < eps frozen) | upru (W < eps frozen, reference code) | imp (pruned only)
    targets: List[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    rate: float = 10.0  # percent of the surviving target weights removed at each round boundary
    rounds: int = 25  # T; round 1 trains the dense network, each later round starts with one prune
    iters_per_round: Optional[int] = 40000  # E
    schedule: Optional[List[int]] = None  # explicit iterations per round (instead of rounds x iters_per_round)
    eps: float = 1e-6
    scope: str = 'layer'  # layer: one threshold per tensor (paper) | global: one over all targets
    rewind: str = 'init'  # init | iter_<k> | none | reinit (same masks, fresh random init)

    @property
    def round_lengths(self):
        return list(self.schedule) if self.schedule else [self.iters_per_round] * self.rounds

    @property
    def rewind_iter(self):
        """k of `rewind: iter_<k>`, else None."""
        m = _REWIND_RE.match(self.rewind)
        return int(m.group(2)) if m and m.group(2) is not None else None

    @classmethod
    def from_opt(cls, section, key='pruning'):
        """Parse and validate a `pruning:` dict; `key` is the option path used in messages."""
        section = dict(section or {})
        known = [f.name for f in fields(cls)]
        for name in section:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f' Did you mean "{close[0]}"?' if close else f' Known keys: {", ".join(known)}.'
                raise OptionError(f'Unknown option {key}.{name}.{hint}')
        if 'schedule' in section and section['schedule'] is not None and 'iters_per_round' not in section:
            section['iters_per_round'] = None
        cfg = cls(**section)
        cfg._validate(key)
        return cfg

    def _validate(self, key):
        if self.method not in METHODS:
            raise OptionError(f'{key}.method is "{self.method}"; use one of {", ".join(METHODS)}.')
        if self.scope not in SCOPES:
            raise OptionError(f'{key}.scope is "{self.scope}"; use one of {", ".join(SCOPES)}.')
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise OptionError(f'{key}.targets must be a non-empty list of parameter name patterns, '
                              f'e.g. {list(DEFAULT_TARGETS)}.')
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0 < self.rate < 100:
            raise OptionError(f'{key}.rate is {self.rate!r}; it is the percent of surviving weights removed per '
                              'round and must lie strictly between 0 and 100 (the paper uses 10).')
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or self.eps < 0:
            raise OptionError(f'{key}.eps is {self.eps!r}; it must be a number >= 0 (the paper uses 1.0e-6).')
        if self.schedule is not None:
            if (not isinstance(self.schedule, (list, tuple)) or not self.schedule
                    or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in self.schedule)):
                raise OptionError(f'{key}.schedule must be a non-empty list of positive iteration counts, one per '
                                  'round, e.g. [1000, 1000, 1000].')
            if self.iters_per_round is not None:
                raise OptionError(f'{key}: give either schedule or iters_per_round, not both.')
            self.rounds = len(self.schedule)
        else:
            if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
                raise OptionError(f'{key}.rounds is {self.rounds!r}; it must be an integer >= 1.')
            n = self.iters_per_round
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise OptionError(f'{key}.iters_per_round is {n!r}; it must be an integer >= 1 '
                                  f'(or give {key}.schedule: [iterations of round 1, round 2, ...]).')
        m = _REWIND_RE.match(str(self.rewind))
        if not m:
            raise OptionError(f'{key}.rewind is "{self.rewind}"; use init, iter_<k> (e.g. iter_500), none or '
                              'reinit.')
        k = self.rewind_iter
        if k is not None and k >= self.round_lengths[0]:
            raise OptionError(f'{key}.rewind is {self.rewind}, but the first round has only '
                              f'{self.round_lengths[0]} iterations; use k < {self.round_lengths[0]}.')


def _check_dataset_folders(opt):
    for phase, dset in (opt.get('datasets') or {}).items():
        io_backend = (dset.get('io_backend') or {}).get('type', 'disk')
        for root_key in ('dataroot_gt', 'dataroot_lq'):
            root = dset.get(root_key)
            if root is None:
                continue
            if not osp.exists(root):
                raise OptionError(f'datasets.{phase}.{root_key}: "{root}" does not exist. Prepare the data (e.g. '
                                  '`dupru-prepare`) or fix the path; relative paths are relative to the current '
                                  'directory.')
            if io_backend == 'lmdb' and not osp.exists(osp.join(root, 'meta_info.txt')):
                raise OptionError(f'datasets.{phase}.{root_key}: "{root}" is not an LMDB made by BasicSR '
                                  '(no meta_info.txt); set io_backend.type: disk or rebuild the LMDB.')
        meta = dset.get('meta_info_file')
        if meta and not osp.isfile(meta):
            raise OptionError(f'datasets.{phase}.meta_info_file: "{meta}" does not exist; remove the key or make it '
                              'with `dupru-prepare --subimages`.')


def _network_scale(net_opt):
    for k in ('upscale', 'scale'):
        if k in net_opt:
            return net_opt[k]
    return None


def _check_scale(opt):
    scale = opt.get('scale')
    net_scale = _network_scale(opt.get('network_g') or {})
    if scale is not None and net_scale is not None and int(scale) != int(net_scale):
        raise OptionError(f'scale is {scale} but network_g upscales by {net_scale}; make them equal.')


def check_options(opt):
    """Check a parsed BasicSR option dict before training/testing starts. Raises OptionError."""
    _check_scale(opt)
    _check_dataset_folders(opt)
    if opt.get('model_type') == 'DUPruModel' and opt.get('is_train', True):
        check_pruning_options(opt)


def check_pruning_options(opt):
    """Validate the `pruning:` section against the rest of the options (targets exist, iterations add up)."""
    from dupru_basicsr.pruning.targets import select_targets
    cfg = PruningConfig.from_opt(opt.get('pruning'))
    train = opt.get('train') or {}
    total = train.get('total_iter')
    if total is None or int(total) != sum(cfg.round_lengths):
        how = (f'rounds ({cfg.rounds}) x iters_per_round ({cfg.iters_per_round})'
               if cfg.schedule is None else f'the sum of pruning.schedule ({cfg.schedule})')
        raise OptionError(f'train.total_iter is {total} but {how} = {sum(cfg.round_lengths)}; set '
                          f'train.total_iter: {sum(cfg.round_lengths)} or change the pruning schedule.')
    sched = dict(train.get('scheduler') or {})
    periods = sched.get('periods')
    if sched.get('type') == 'CosineAnnealingRestartLR' and periods and sum(periods) < max(cfg.round_lengths):
        raise OptionError(f'train.scheduler.periods sum to {sum(periods)}, but the LR schedule restarts every round '
                          f'and the longest round has {max(cfg.round_lengths)} iterations; make the periods sum to '
                          'the iterations of one round.')
    if opt.get('network_g'):
        # Not basicsr's build_network: it logs, and BasicSR's root logger must not be touched before the log file
        # handler is set up (it would never get one).
        from basicsr.utils.registry import ARCH_REGISTRY
        net_opt = dict(opt['network_g'])
        net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
        try:
            select_targets(net, cfg.targets)
        except ValueError as e:
            raise OptionError(f'pruning.targets: {e}') from None
    return cfg
