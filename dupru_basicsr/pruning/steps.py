"""The freezing step's engines by name (`Pruner(step=...)`, option `pruning.step`); see pruning.engine."""
from collections import OrderedDict

from dupru_basicsr.pruning.compiled_step import CompiledStep
from dupru_basicsr.pruning.eager_step import EagerStep

STEP_ENGINES = OrderedDict([(EagerStep.name, EagerStep), (CompiledStep.name, CompiledStep)])
STEP_MODES = tuple(STEP_ENGINES)


def make_step_engine(name):
    """A fresh engine of the step named `name` (one of STEP_MODES)."""
    if name not in STEP_ENGINES:
        raise ValueError(f'Unknown pruning step "{name}"; use one of {", ".join(STEP_MODES)}.')
    return STEP_ENGINES[name]()
