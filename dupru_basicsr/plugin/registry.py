"""The rules that `pruning.method` and `pruning.scope` name: one registry per kind.

- `FREEZE_RULE_REGISTRY` (`pruning.method`): built in `dupru`, `upru`, `imp` (`dupru_basicsr.pruning.freeze`).
- `SCOPE_REGISTRY` (`pruning.scope`): built in `layer`, `global` (`dupru_basicsr.pruning.scopes`).

Register your own from your own module, as with BasicSR's registries:

    from dupru_basicsr.plugin.registry import FREEZE_RULE_REGISTRY

    @FREEZE_RULE_REGISTRY.register()
    def dupru_wide(weight, keep_mask, eps):
        '''Freeze |W| < 10 eps: bool tensor, True = keep the value during this step.'''
        return weight.abs() < 10 * eps

and select it with `pruning.method: dupru_wide` plus `pruning.plugins: [my_package.my_rules]` (modules imported
before the options are checked). Such a rule is called once per target tensor and step; a rule that decides every
entry from that entry alone (like the one above) may say so with `dupru_wide.elementwise = True`, and is then called
once per step on all targets flattened into one buffer (a fixed number of ops, as the built-in rules).

A threshold scope is a function `(weights, mask, rate=None, sparsity=None) -> (Mask, thresholds)` registered with
`@SCOPE_REGISTRY.register()`.
"""
from dupru_basicsr.pruning.freeze import FREEZE_RULES
from dupru_basicsr.pruning.scopes import SCOPES


class Registry:
    """Name -> function, with the surface of BasicSR's Registry (`@R.register()`, `R.register(fn)`, `R.get(name)`,
    `name in R`, `R.keys()`); `register(fn, name=...)` names a function other than by its `__name__` (the built-in
    scope `global` is a Python keyword). Pure Python: the pruning options need no BasicSR to resolve."""

    def __init__(self, name, what):
        self.name, self.what = name, what  # for messages: the registry's name, what its entries are
        self._rules = {}

    def register(self, obj=None, name=None):
        if obj is None:
            return lambda fn: self.register(fn, name)
        name = name or obj.__name__
        if name in self._rules:
            raise KeyError(f'{self.what} "{name}" is already registered.')
        self._rules[name] = obj
        return obj

    def get(self, name):
        if name not in self._rules:
            raise KeyError(f'"{name}" is not a registered {self.what} (registered: {", ".join(sorted(self._rules))}); '
                           f'register it with @{self.name}.register() in a module listed in pruning.plugins.')
        return self._rules[name]

    def __contains__(self, name):
        return name in self._rules

    def keys(self):
        return self._rules.keys()


FREEZE_RULE_REGISTRY = Registry('FREEZE_RULE_REGISTRY', 'pruning method')
SCOPE_REGISTRY = Registry('SCOPE_REGISTRY', 'pruning scope')
for _name, _rule in FREEZE_RULES.items():
    FREEZE_RULE_REGISTRY.register(_rule, _name)
for _name, _scope in SCOPES.items():
    SCOPE_REGISTRY.register(_scope, _name)

REGISTRIES = {'freeze': FREEZE_RULE_REGISTRY, 'scope': SCOPE_REGISTRY}


def lookup(name, kind):
    """The registered rule `name` of `kind` ('freeze' or 'scope'; what `Pruner(lookup=...)` asks); KeyError with
    the known names otherwise."""
    return REGISTRIES[kind].get(name)
