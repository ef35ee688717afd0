"""Which parameters are pruned: chosen by name patterns (fnmatch, `*` also matches dots)."""
import fnmatch
from collections import OrderedDict

from dupru_basicsr.pruning.presets import DEFAULT_TARGETS, PRESET_KINDS, preset_targets  # noqa: F401  (re-export)


def select_targets(module, patterns):
    """Ordered {name: parameter} of `module`'s parameters whose names match any of `patterns`.

    Raises ValueError naming the pattern when one matches nothing (a typo would otherwise silently prune nothing),
    or when a match is not a floating-point tensor.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    named = OrderedDict(module.named_parameters())
    selected = OrderedDict()
    for pattern in patterns:
        hits = [name for name in named if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            examples = ', '.join(list(named)[:6])
            raise ValueError(f'Pruning target pattern "{pattern}" matches no parameter of '
                             f'{type(module).__name__} (parameters are named like: {examples}, ...).')
        for name in hits:
            if not named[name].is_floating_point():
                raise ValueError(f'Pruning target "{name}" (pattern "{pattern}") is a {named[name].dtype} tensor; '
                                 'only floating-point weights can be pruned.')
            selected[name] = named[name]
    # keep the module's parameter order whatever the order of the patterns
    return OrderedDict((name, p) for name, p in named.items() if name in selected)


def layer_weights(module):
    """The weight names of every convolution and linear layer of `module` (what NNI's and torch.nn.utils.prune's
    examples prune): the targets of `prune_model` for a network without a preset."""
    import torch.nn as nn
    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    return [f'{name}.weight' if name else 'weight' for name, m in module.named_modules()
            if isinstance(m, kinds) and getattr(m, 'weight', None) is not None]


def resolve_targets(module, targets):
    """Target patterns from `targets`: a preset name of pruning.presets (body, whole), looked up by the class name of
    `module`, or a pattern, or a list of patterns. Raises ValueError naming the presets there are."""
    if isinstance(targets, str) and targets in PRESET_KINDS:
        try:
            return preset_targets(type(module).__name__, targets)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
    return [targets] if isinstance(targets, str) else list(targets)
