"""PRUNING_REGISTRY: the pruning rules that `pruning.method` and `pruning.scope` name, in BasicSR's Registry.

Built in: the freeze rules `dupru`, `upru`, `imp` and the threshold scopes `layer`, `global` (the pure-PyTorch
implementations in `dupru_basicsr.pruning`). Register your own from your own module, like any BasicSR component:

    from dupru_basicsr.registry import PRUNING_REGISTRY

    @PRUNING_REGISTRY.register()
    def dupru_wide(weight, keep_mask, eps):
        '''Freeze |W| < 10 eps: bool tensor, True = keep the value during this step.'''
        return weight.abs() < 10 * eps

and select it with `pruning.method: dupru_wide` plus `pruning.plugins: [my_package.my_rules]` (modules imported
before the options are checked). Such a rule is called once per target tensor and step; a rule that decides every
entry from that entry alone (like the one above) may say so with `dupru_wide.elementwise = True`, and is then called
once per step on all targets flattened into one buffer (a fixed number of ops, as the built-in rules).

A threshold scope is a function `(weights, mask, rate=None, sparsity=None) -> (Mask, thresholds)` marked with
`scope.pruning_kind = 'scope'`.
"""
from basicsr.utils.registry import Registry

from dupru_basicsr.pruning.freeze import FREEZE_RULES
from dupru_basicsr.pruning.strategy import STRATEGIES

PRUNING_REGISTRY = Registry('pruning')
for _name, _rule in FREEZE_RULES.items():
    PRUNING_REGISTRY._do_register(_name, _rule)
for _name, _strategy in STRATEGIES.items():
    _strategy.pruning_kind = 'scope'
    PRUNING_REGISTRY._do_register(_name, _strategy)


def lookup(name, kind):
    """The registered rule `name` of `kind` ('freeze' or 'scope'); KeyError with the known names otherwise."""
    known = sorted(k for k, v in PRUNING_REGISTRY._obj_map.items() if getattr(v, 'pruning_kind', 'freeze') == kind)
    obj = PRUNING_REGISTRY._obj_map.get(name)
    if obj is None or getattr(obj, 'pruning_kind', 'freeze') != kind:
        raise KeyError(f'"{name}" is not a registered pruning {"method" if kind == "freeze" else "scope"} '
                       f'(registered: {", ".join(known)}); register it with @PRUNING_REGISTRY.register() in a module '
                       'listed in pruning.plugins.')
    return obj
