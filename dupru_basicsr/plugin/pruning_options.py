"""The `pruning:` section: `pruning_section` is the one place that reads it from an option dict, `pruning_config`
parses and validates it into a `PruningConfig` once per content (the one owner of every pruning setting: the option
checks, the model, the schedules, the `Pruner` and the resume check all receive that object),
`check_pruning_options` checks it against the rest of the options (once per start: the model reuses the result of
dupru-train's check), and `check_resume_options` refuses a resume whose pruning settings changed.
"""
import json
import math
import re
import warnings
from dataclasses import dataclass, field, fields
from typing import List, Optional

from dupru_basicsr.plugin.option_base import OptionError, OptionWarning, as_int, build_network, did_you_mean, \
    is_pruning_model
from dupru_basicsr.plugin.option_base import text_hint as _text_hint
from dupru_basicsr.pruning.presets import PRESET_KINDS, preset_targets
from dupru_basicsr.plugin.registry import lookup
from dupru_basicsr.plugin.resume import recorded_pruning_config
from dupru_basicsr.pruning.granularity import block_size, check_blockable
from dupru_basicsr.pruning.schedules import rate_for_sparsity
from dupru_basicsr.pruning.steps import STEP_MODES
from dupru_basicsr.pruning.targets import DEFAULT_TARGETS, select_targets

_REWIND_RE = re.compile(r'^(init|none|lr|reinit|iter_(\d+))$')
GRADUAL = 'gradual'
GRADUAL_KEYS = ('start_iter', 'end_iter', 'final_sparsity', 'frequency')


def _names_preset(targets):
    """Whether `pruning.targets` names a target preset (body, whole) rather than listing patterns."""
    return isinstance(targets, str) and targets in PRESET_KINDS


def _key(default, type_, allowed, meaning, example):
    """A `pruning:` key: its default and what the reference table (`reference_table`, docs/pruning_options.md) says
    of it; the table is made from these, so a key cannot be added without its row."""
    return field(default=default, metadata={'type': type_, 'allowed': allowed, 'meaning': meaning,
                                            'example': example})


@dataclass
class PruningConfig:
    """The `pruning:` section of a BasicSR option file (defaults reproduce the paper's DUPru). Units: `rate` is a
    percent of the survivors (0-100); `sparsity` and `final_sparsity` are fractions of the targets (0-1)."""
    method: str = _key('dupru', 'name', 'dupru, upru, imp, or a registered freeze rule',
                       'the freeze rule: dupru freezes weights with \\|W\\| < eps, upru weights with W < eps (the '
                       'reference code), imp only the pruned ones', 'method: dupru')
    targets: Optional[object] = _key(None, 'preset or list of patterns', 'body, whole, or fnmatch patterns',
                                     'the pruned parameters: a preset of network_g.type (body: the default; whole: '
                                     'body + upsampler) or parameter name patterns (`*` also matches dots)',
                                     "targets: whole, targets: ['body.*.weight']")
    sparsity: Optional[float] = _key(None, 'fraction', '0 < sparsity < 1',
                                     'the share of the target weights pruned at the end of the run: with rounds it '
                                     'sets rate (rounds - 1 equal prunes), with schedule: gradual it is the final '
                                     'sparsity; give it or rate / final_sparsity, not both', 'sparsity: 0.9')
    rate: float = _key(10.0, 'percent', '0 < rate < 100',
                       'percent of the surviving target weights removed at each round boundary (rounds only)',
                       'rate: 10')
    rounds: int = _key(25, 'integer', '>= 1 (1 with schedule: gradual)',
                       'T: round 1 trains the dense network, each later round starts with one prune (T - 1 prunes)',
                       'rounds: 5')
    iters_per_round: Optional[int] = _key(40000, 'integer', '>= 1',
                                          'E: iterations of every round (with schedule: gradual, of the whole run); '
                                          'train.total_iter must equal rounds x iters_per_round', 'iters_per_round: '
                                          '40000')
    schedule: Optional[object] = _key(None, 'list of integers, or gradual', 'positive counts, or gradual',
                                      'the iterations of each round instead of rounds x iters_per_round, or gradual: '
                                      'gradual magnitude pruning (Zhu & Gupta) in one round, set by start_iter, '
                                      'end_iter, sparsity (or final_sparsity) and frequency',
                                      'schedule: [40000, 20000], schedule: gradual')
    eps: float = _key(1e-6, 'number', '>= 0 (write 1.0e-6: PyYAML reads 1e-6 as text)',
                      'the freezing threshold of the freeze rule', 'eps: 1.0e-6')
    scope: str = _key('layer', 'name', 'layer, global, or a registered scope',
                      'layer: one threshold per tensor (the paper); global: one over all targets', 'scope: global')
    rewind: str = _key('init', 'name', 'init, iter_<k>, none, lr, reinit',
                       'the weights each round starts from: init W0 ⊙ mask; iter_<k> the weights at iteration k of '
                       'round 1; none the trained weights, at the last learning rate; lr the trained weights with the '
                       'learning-rate schedule restarted (learning-rate rewinding); reinit a fresh random init',
                       'rewind: lr')
    start_iter: Optional[int] = _key(None, 'integer', '0 <= start_iter < end_iter',
                                     'schedule: gradual only: the iteration of the first prune', 'start_iter: 1')
    end_iter: Optional[int] = _key(None, 'integer', 'start_iter < end_iter <= iters_per_round',
                                   'schedule: gradual only: the iteration of the last prune', 'end_iter: 60000')
    final_sparsity: Optional[float] = _key(None, 'fraction', '0 < final_sparsity < 1',
                                           'schedule: gradual only: the same as sparsity (its older name)',
                                           'final_sparsity: 0.9')
    frequency: Optional[int] = _key(None, 'integer', '>= 1',
                                    'schedule: gradual only: prune every frequency iterations', 'frequency: 1000')
    plugins: Optional[List[str]] = _key(None, 'list of module names', 'importable modules',
                                        'modules imported first (they register freeze rules, scopes or presets in '
                                        'plugin.registry)', 'plugins: [my_rules]')
    granularity: str = _key('element', 'name', 'element, oc_block<N> (e.g. oc_block4)',
                            'what is pruned together: single weights, or N consecutive output channels at the same '
                            '(input channel, kh, kw), scored by their L2 norm; oc_block4 is the pattern sparse CPU '
                            'kernels (MNN) run fast. Every target needs output channels divisible by N',
                            'granularity: oc_block4')
    step: str = _key('eager', 'name', 'eager, compiled',
                     'the freezing step: eager ops, or torch.compile of both hooks (the same bits; built-in methods '
                     'and float32 only, else eager with a warning; the first step compiles)', 'step: compiled')

    def resolve_targets(self, network_type):
        """The target patterns: `targets`, or the preset of `network_type` (pruning.presets) that `targets` names
        (body, the default, or whole)."""
        preset = self.targets if self.targets is None or _names_preset(self.targets) else False
        if preset is False:
            return list(self.targets)
        try:
            return preset_targets(network_type, preset or 'body')
        except KeyError as e:
            raise OptionError(f'pruning.targets: {e.args[0]}') from None

    @property
    def round_lengths(self):
        if self.schedule and self.schedule != GRADUAL:
            return list(self.schedule)
        return [self.iters_per_round] * self.rounds

    @property
    def gradual(self):
        """{start_iter, end_iter, final_sparsity, frequency} with `schedule: gradual`, else None."""
        return {k: getattr(self, k) for k in GRADUAL_KEYS} if self.schedule == GRADUAL else None

    @property
    def rewind_iter(self):
        """k of `rewind: iter_<k>`, else None."""
        m = _REWIND_RE.match(self.rewind)
        return int(m.group(2)) if m and m.group(2) is not None else None

    @classmethod
    def from_opt(cls, section, key='pruning'):
        """Parse and validate a `pruning:` dict; `key` is the option path used in messages."""
        if section is not None and not isinstance(section, dict):
            raise OptionError(f'{key} is {section!r}; it must be a mapping of pruning options (method, rate, rounds, '
                              'iters_per_round, ...).')
        section = dict(section or {})
        known = [f.name for f in fields(cls)]
        for name in section:
            if name not in known:
                hint = did_you_mean(name, known) or f' Known keys: {", ".join(known)}.'
                raise OptionError(f'Unknown option {key}.{name}.{hint}')
        if 'sparsity' in section:
            other = 'final_sparsity' if section.get('schedule') == GRADUAL else 'rate'
            if other in section:
                raise OptionError(f'{key}: give either sparsity or {other}, not both (sparsity, the pruned share of '
                                  f'the targets at the end, sets {other}).')
        if section.get('schedule') == GRADUAL:
            section.setdefault('rounds', 1)
        elif section.get('schedule') is not None:
            if 'iters_per_round' not in section:
                section['iters_per_round'] = None
            rounds = section.pop('rounds', None)
            if rounds is not None and isinstance(section['schedule'], (list, tuple)) and \
                    rounds != len(section['schedule']):
                raise OptionError(f'{key}.rounds is {rounds} but {key}.schedule lists {len(section["schedule"])} '
                                  'rounds; remove rounds (the schedule sets it) or make them agree.')
        cfg = cls(**section)
        cfg._validate(key)
        return cfg

    def _validate(self, key):
        self._import_plugins(key)
        for name, kind in (('method', 'freeze'), ('scope', 'scope')):
            try:
                lookup(getattr(self, name), kind)
            except KeyError as e:
                raise OptionError(f'{key}.{name}: {e.args[0]}') from None
        try:
            block_size(self.granularity)
        except ValueError as e:
            raise OptionError(f'{key}.granularity: {e}') from None
        if self.step not in STEP_MODES:
            raise OptionError(f'{key}.step is {self.step!r}; use one of {", ".join(STEP_MODES)} (the same results; '
                              'compiled is faster where torch.compile works, see bench/README.md).')
        if isinstance(self.targets, str) and not _names_preset(self.targets):
            self.targets = [self.targets]
        if self.targets is not None and not _names_preset(self.targets) and (
                not isinstance(self.targets, (list, tuple)) or not self.targets
                or not all(isinstance(t, str) and t for t in self.targets)):
            raise OptionError(f'{key}.targets must be a preset ({" or ".join(PRESET_KINDS)}) or a non-empty list of '
                              f'parameter name patterns, e.g. {list(DEFAULT_TARGETS)}.')
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0 < self.rate < 100:
            raise OptionError(f'{key}.rate is {self.rate!r}; it is the percent of surviving weights removed per '
                              'round and must lie strictly between 0 and 100 (the paper uses 10).'
                              f'{_text_hint(self.rate)}')
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 <= self.eps < math.inf:
            raise OptionError(f'{key}.eps is {self.eps!r}; it must be a finite number >= 0 (the paper uses 1.0e-6).'
                              f'{_text_hint(self.eps)}')
        if self.sparsity is not None and (isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float))
                                          or not 0 < self.sparsity < 1):
            raise OptionError(f'{key}.sparsity is {self.sparsity!r}; it is the pruned share of the targets at the end '
                              'of the run, a fraction strictly between 0 and 1 (e.g. 0.9 for 90 %).'
                              f'{_text_hint(self.sparsity)}')
        if self.schedule == GRADUAL:
            if self.sparsity is not None:
                self.final_sparsity = self.sparsity
            self._validate_gradual(key)
        elif self.schedule is not None:
            if (not isinstance(self.schedule, (list, tuple)) or not self.schedule
                    or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in self.schedule)):
                raise OptionError(f'{key}.schedule is {self.schedule!r}; give a non-empty list of positive iteration '
                                  'counts, one per round (e.g. [1000, 1000, 1000]), or gradual.')
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
        if self.sparsity is not None and self.schedule != GRADUAL:
            if self.rounds < 2:
                raise OptionError(f'{key}.sparsity needs at least 2 rounds (round 1 is dense; T rounds prune T - 1 '
                                  f'times), but there is {self.rounds}; set rounds (or the schedule) or use '
                                  'schedule: gradual.')
            self.rate = rate_for_sparsity(self.sparsity, self.rounds - 1)
        if self.schedule != GRADUAL:
            extra = [k for k in GRADUAL_KEYS if getattr(self, k) is not None]
            if extra:
                raise OptionError(f'{key}.{extra[0]} is only used with {key}.schedule: gradual; remove it or set the '
                                  'schedule.')
        m = _REWIND_RE.match(str(self.rewind))
        if not m:
            raise OptionError(f'{key}.rewind is "{self.rewind}"; use init, iter_<k> (e.g. iter_500), none, lr or '
                              'reinit.')
        k = self.rewind_iter
        if k is not None and k >= self.round_lengths[0]:
            raise OptionError(f'{key}.rewind is {self.rewind}, but the first round has only '
                              f'{self.round_lengths[0]} iterations; use k < {self.round_lengths[0]}.')

    def _import_plugins(self, key):
        if self.plugins is None:
            return
        if isinstance(self.plugins, str):
            self.plugins = [self.plugins]
        import importlib
        for module in self.plugins:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise OptionError(f'{key}.plugins: cannot import "{module}" ({e}); make it importable (installed, or '
                                  'on PYTHONPATH / in the current directory).') from None

    def _validate_gradual(self, key):
        if self.rounds != 1:
            raise OptionError(f'{key}.rounds is {self.rounds!r}, but schedule: gradual prunes within one round; '
                              'remove rounds or set it to 1.')
        n = self.iters_per_round
        if as_int(n) is None or n < 1:
            raise OptionError(f'{key}.iters_per_round is {n!r}; with schedule: gradual it is the length of the run '
                              '(train.total_iter).')
        missing = [k if k != 'final_sparsity' else 'sparsity' for k in GRADUAL_KEYS if getattr(self, k) is None]
        if missing:
            raise OptionError(f'{key}.schedule is gradual but {", ".join(f"{key}.{m}" for m in missing)} '
                              f'{"is" if len(missing) == 1 else "are"} not set; give start_iter, end_iter, '
                              'sparsity (the final pruned share, a fraction in (0, 1)) and frequency.')
        start, end, freq = (as_int(self.start_iter), as_int(self.end_iter), as_int(self.frequency))
        if start is None or end is None or not 0 <= start < end <= n:
            raise OptionError(f'{key}.start_iter ({self.start_iter!r}) and {key}.end_iter ({self.end_iter!r}) must '
                              f'be integers with 0 <= start_iter < end_iter <= iters_per_round ({n}).')
        if isinstance(self.final_sparsity, bool) or not isinstance(self.final_sparsity, (int, float)) or \
                not 0 < self.final_sparsity < 1:
            raise OptionError(f'{key}.final_sparsity is {self.final_sparsity!r}; it is the pruned fraction of the '
                              'targets at end_iter and must lie strictly between 0 and 1 (e.g. 0.8).'
                              f'{_text_hint(self.final_sparsity)}')
        if freq is None or freq < 1:
            raise OptionError(f'{key}.frequency is {self.frequency!r}; prune every `frequency` iterations, an '
                              'integer >= 1.')


REFERENCE_COLUMNS = ('type', 'allowed', 'meaning', 'example')


def reference_table():
    """The Markdown reference of every `pruning:` key (key, type, default, allowed values, meaning, example), made
    from PruningConfig's definitions: docs/pruning_options.md holds its output (`python -m
    dupru_basicsr.plugin.pruning_reference` prints it; a test compares)."""
    rows = ['| key | type | default | allowed | meaning | example |', '|---|---|---|---|---|---|']
    for f in fields(PruningConfig):
        missing = [c for c in REFERENCE_COLUMNS if not f.metadata.get(c)]
        if missing:
            raise ValueError(f'pruning.{f.name} has no {", ".join(missing)} for the reference table: define it with '
                             '_key(default, type, allowed, meaning, example).')
        default = '(none)' if f.default is None else f'`{f.default}`'
        example = ', '.join(f'`{e}`' for e in re.split(r', (?=\w+:)', f.metadata['example']))
        rows.append(f'| `{f.name}` | {f.metadata["type"]} | {default} | {f.metadata["allowed"]} | '
                    f'{f.metadata["meaning"]} | {example} |')
    return '\n'.join(rows) + '\n'


def pruning_section(opt):
    """The `pruning:` section of an option dict as written (None without one): the one reader of the key."""
    return opt.get('pruning')


def _content_key(*parts):
    """A text that equal option contents share (None when a value is not plain YAML data: then nothing is reused)."""
    try:
        return json.dumps(parts, sort_keys=True)
    except (TypeError, ValueError):
        return None


_PARSED = {}  # content key of a pruning: section -> its PruningConfig


def pruning_config(opt):
    """The `PruningConfig` of `opt`'s pruning: section, parsed and validated once per content (the same object for
    every consumer of one start: option checks, DUPruModel, resume checks). Raises OptionError."""
    section = pruning_section(opt)
    key = _content_key(section)
    cfg = _PARSED.get(key) if key is not None else None
    if cfg is None:
        cfg = PruningConfig.from_opt(section)
        if key is not None:
            _PARSED[key] = cfg
    return cfg


EPS_WARN_FRACTION = 0.01  # warn when pruning.eps exceeds this fraction of the median initial |W| of the targets


def _is_normalisation(module):
    import torch.nn as nn
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


def _list_names(names, limit=4):
    return ', '.join(names[:limit]) + (f' and {len(names) - limit} more' if len(names) > limit else '')


def warn_about_targets(net, targets, cfg):
    """OptionWarnings (training still starts) for pruning targets that are biases or normalisation weights, and for
    an eps above EPS_WARN_FRACTION of the median |W| of the targets in the freshly built `net`. Returns the messages.

    Why: biases start at 0.0 and normalisation weights at 1.0, so magnitude pruning either removes biases first or
    cannot rank the weights, and DUPru / UPru freeze every target below eps (DUPru: |W| < eps) from the first step,
    so zero-initialised biases never train; an eps near the weights' own size freezes live weights, not only pruned
    ones. Warnings, not errors: such settings are legitimate experiments."""
    import torch
    modules = dict(net.named_modules())
    biases, norms = [], []
    for name in targets:
        owner, _, leaf = name.rpartition('.')
        if leaf == 'bias':
            biases.append(name)
        elif _is_normalisation(modules.get(owner)):
            norms.append(name)
    freezes_by_eps = cfg.method != 'imp'  # imp freezes the pruned weights only; dupru, upru and custom rules get eps
    messages = []
    if biases:
        frozen = f', and {cfg.method} freezes them (they are below eps) from the first step' if freezes_by_eps else ''
        messages.append(f'pruning.targets selects {len(biases)} bias tensor(s) ({_list_names(biases)}): biases start '
                        f'at 0.0, so magnitude pruning removes them first{frozen}; prune weights only (e.g. '
                        'body.*.weight).')
    if norms:
        messages.append(f'pruning.targets selects {len(norms)} normalisation weight(s) ({_list_names(norms)}): they '
                        'all start at 1.0, so magnitude pruning cannot rank them, and pruning one removes a whole '
                        "channel's scale; prune convolution / linear weights only.")
    with torch.no_grad():
        magnitudes = torch.cat([p.detach().abs().flatten().float() for p in targets.values()])
        median = magnitudes.median().item() if magnitudes.numel() else 0.0
    if freezes_by_eps and median > 0 and cfg.eps > EPS_WARN_FRACTION * median:
        messages.append(f'pruning.eps is {cfg.eps:g}, above {EPS_WARN_FRACTION:.0%} of the median initial |W| of the '
                        f'targets ({median:.3g}): {cfg.method} freezes the target weights that eps marks as pruned '
                        f'(|W| < eps for dupru), so it would freeze live weights too; use an eps well below '
                        f'{median:.3g} (the paper uses 1.0e-6).')
    for message in messages:
        warnings.warn(message, OptionWarning, stacklevel=2)
    return messages


_CHECKED = {}  # content key of what check_pruning_options reads -> its PruningConfig


def _check_key(opt):
    train = opt.get('train') or {}
    return _content_key(pruning_section(opt), opt.get('model_type'), opt.get('network_g'), train.get('total_iter'),
                        train.get('scheduler'))


def checked_pruning_config(opt):
    """`check_pruning_options(opt)`, unless options of the same content passed it already in this process (dupru-train
    checks before it builds the model, and the model checks when it is built under any loop): then its config,
    without a second check (no second throwaway network, no repeated warnings)."""
    key = _check_key(opt)
    if key is not None and key in _CHECKED:
        return _CHECKED[key]
    return check_pruning_options(opt)


def check_pruning_options(opt):
    """Validate the `pruning:` section against the rest of the options (targets exist, iterations add up); returns
    its PruningConfig."""
    if pruning_section(opt) is None:
        # the defaults are the paper's 25 rounds x 40,000 iterations: never what a file without the section meant
        raise OptionError(f'model_type is {opt.get("model_type")}, which prunes, but the option file has no pruning: '
                          'section; add one (e.g. pruning: {method: dupru, rate: 10, rounds: 5, iters_per_round: '
                          f'{max(1, int((opt.get("train") or {}).get("total_iter") or 5) // 5)}}}, see README "The '
                          'pruning: section"), or use model_type: SRModel for a dense run.')
    cfg = pruning_config(opt)
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
    if cfg.rounds == 1 and not cfg.gradual:
        warnings.warn('pruning.rounds is 1: round 1 is dense and no prune ever happens, so this run trains the dense '
                      'network (with the freeze rule on weights below eps). Set rounds >= 2, or schedule: gradual.',
                      OptionWarning, stacklevel=2)
    if opt.get('network_g'):
        targets = cfg.resolve_targets(opt['network_g'].get('type'))
        net = build_network(opt)
        try:
            selected = select_targets(net, targets)
        except ValueError as e:
            raise OptionError(f'pruning.targets: {e} Fix the pattern (fnmatch syntax, e.g. body.*.weight).') from None
        try:
            check_blockable(selected, block_size(cfg.granularity))
        except ValueError as e:
            raise OptionError(f'pruning.granularity: {e}') from None
        warn_about_targets(net, selected, cfg)
    key = _check_key(opt)
    if key is not None:
        _CHECKED[key] = cfg
    return cfg


# ---------------------------------------------------------------------------------------------------- resume checks
# The pruning options that change the result of a run, as `resume_config` records them in every training state;
# (key, how the message names it). `plugins` is not one (it only imports modules).
RESUME_KEYS = (
    ('method', 'pruning.method'),
    ('targets', 'pruning.targets (resolved patterns)'),
    ('rate', 'pruning.rate'),
    ('round_lengths', 'pruning.rounds x iters_per_round / schedule (iterations of each round)'),
    ('eps', 'pruning.eps'),
    ('scope', 'pruning.scope'),
    ('granularity', 'pruning.granularity'),
    ('rewind', 'pruning.rewind'),
    ('start_iter', 'pruning.start_iter'),
    ('end_iter', 'pruning.end_iter'),
    ('final_sparsity', 'pruning.final_sparsity'),
    ('frequency', 'pruning.frequency'),
)


def resume_config(opt, cfg=None):
    """The normalized pruning settings of a run (plain types, `RESUME_KEYS`): what a resume must not change.

    Different spellings of one schedule (rounds x iters_per_round or the same list in schedule) compare equal."""
    cfg = cfg or pruning_config(opt)
    gradual = cfg.gradual or {}
    return {
        'method': str(cfg.method),
        'targets': [str(t) for t in cfg.resolve_targets((opt.get('network_g') or {}).get('type'))],
        'rate': float(cfg.rate),
        'round_lengths': [int(n) for n in cfg.round_lengths],
        'eps': float(cfg.eps),
        'scope': str(cfg.scope),
        'granularity': str(cfg.granularity),
        'rewind': str(cfg.rewind),
        'start_iter': gradual.get('start_iter'),
        'end_iter': gradual.get('end_iter'),
        'final_sparsity': None if gradual.get('final_sparsity') is None else float(gradual['final_sparsity']),
        'frequency': gradual.get('frequency'),
    }


def check_resume_options(opt, resume_state, cfg=None):
    """Refuse to resume a DUPruModel run whose pruning options changed in a way that alters the result, and a
    DUPruModel state resumed by another model (it would drop the masks).

    Raises one OptionError that lists every changed key with its old and new value. A training state without a
    pruning state (written by another model, or by a DUPruModel under BasicSR's loop before the model saved its
    state itself) is refused too. States written before the config was recorded are checked on what they record,
    and the keys they do not record (rewind, gradual settings) are named in a warning. Returns the list of keys
    that could not be checked. No-op for models other than DUPruModel or without a resume state. `cfg`: the
    run's parsed `pruning:` section, when the caller has it.
    """
    if resume_state is None:
        return []
    where = (opt.get('path') or {}).get('resume_state') or 'the training state'
    if not is_pruning_model(opt.get('model_type')):
        if isinstance(resume_state, dict) and isinstance(resume_state.get('pruning'), dict):
            model_type = opt.get('model_type')
            raise OptionError(f'path.resume_state: {where} was written by a DUPruModel run (it holds its pruning '
                              f'state and masks); model_type {model_type} would drop them and let the pruned '
                              'weights grow back. Resume it with model_type: DUPruModel and its pruning: section, or '
                              'start a new stock run from its weights (path.pretrain_network_g: a net_g_*.pth of '
                              'that run, under another name).')
        return []
    pruning = resume_state.get('pruning') if isinstance(resume_state, dict) else None
    if not isinstance(pruning, dict):
        raise OptionError(f'{where} has no pruning state (it was written by another model, or by a DUPruModel run '
                          'of an older dupru-basicsr under BasicSR\'s own loop); it cannot continue the round '
                          'schedule. Resume a DUPruModel run from its own training_states, or start it afresh '
                          '(another name, or move the experiment folder away).')
    old, new = recorded_pruning_config(pruning), resume_config(opt, cfg)
    changed = [f'{label}: {old[k]!r} -> {new[k]!r}' for k, label in RESUME_KEYS if k in old and old[k] != new[k]]
    if changed:
        raise OptionError(f'Cannot resume from {where}: these pruning options differ from the run being resumed, '
                          'and a resumed run would mix two settings: ' + '; '.join(changed) + '. Restore them in the '
                          'option file, or start a new run under another name.')
    unchecked = [label for k, label in RESUME_KEYS if k not in old]
    if unchecked:
        import logging
        logging.getLogger('basicsr').warning(
            f'{where} was written by an older dupru-basicsr and does not record {", ".join(unchecked)}; they '
            'cannot be checked against this run: make sure they are unchanged.')
    return unchecked
