"""The freezing step's engines: how a `Pruner` masks the gradients before every optimizer step and restores the
frozen entries after it. This module holds their interface (`StepEngine`); `pruning.steps` chooses one by name
(`STEP_ENGINES`: `Pruner(step=...)`, option `pruning.step`):

- `eager` (`eager_step.EagerStep`, the default): eager ops on persistent flat buffers, a fixed number of ops
  whatever the number of target tensors;
- `compiled` (`compiled_step.CompiledStep`): each hook is one `torch.compile`d pass (built-in rules, float32 targets).

Both give the same weights bit for bit. An engine gets its pruner at every call (the masks, the targets, the freeze
rule and eps are the pruner's); it owns only its buffers. An engine that cannot go on (a compile that failed) names
its successor in `replacement`, which the pruner installs after that step.
"""
import torch
import warnings

_BIT_TYPES = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t):
    """An integer view of the float tensor `t` (same storage, same bit patterns)."""
    return t.view(_BIT_TYPES[t.element_size()])


class StepFallbackWarning(RuntimeWarning):
    """A step engine could not run as asked (e.g. `compiled` where torch.compile fails) and another one took over.
    The results are the same; only the speed differs. The test suite turns it into an error (setup.cfg), so that no
    test of the compiled step passes on the eager one."""


def warn_fallback(message):
    warnings.warn(message, StepFallbackWarning, stacklevel=3)


class StepEngine:
    """How the freezing runs around an optimizer step (see the module docstring).

    - `before_step(pruner)`: decide the entries frozen in this step (the freeze rule's and the pruned ones) and zero
      their gradients;
    - `after_step(pruner)`: give the frozen entries back their exact previous value (pruned ones exactly 0.0);
    - `learning`: the flat 0/1 buffer of the entries that learn (counted by `Pruner.frozen_fraction`);
    - `buffers()`: the persistent buffers (for the bench's memory count); `release()` drops them;
    - `replacement`: None, or the engine that takes over from the next step on.
    """

    name = None

    def __init__(self):
        self.learning = None
        self.replacement = None

    def before_step(self, pruner):
        raise NotImplementedError

    def after_step(self, pruner):
        raise NotImplementedError

    def buffers(self):
        return []

    def release(self):
        pass
