"""The freezing step as one compiled pass per hook (`Pruner(..., step='compiled')`, option `pruning.step: compiled`).

The eager step (pruner._FlatTargets) decides the frozen set before every optimizer step and restores it after, in
about nine passes over the targets with eager ops. Here the after-step hook is one function compiled with
`torch.compile` (a C++ loop nest on a CPU, Triton kernels on CUDA) that, in one pass over each target,

- restores: `new = learning ? stepped weight : saved` (bit patterns: exact for every value, NaN/inf/-0.0 included);
- decides the next step's learning entries from the restored weights, while they are in cache:
  `learning_next = learning and not rule(new)`;
- saves the values of the entries frozen next: `saved_next = learning_next ? 0 : new`.

The before-step hook is one compiled pass that multiplies the fresh gradients' bit patterns by the 0/1 learning
mask.
Two persistent buffers: the learning mask and the saved values, as integers of the weights' bit width (8 bytes per
fp32 target entry, 2x the target bytes).

`learning_next = learning and not rule(new)` equals the eager step's `keep and not rule(w)` for the built-in rules,
which decide every entry from that entry alone: a pruned entry never learns again (keep only shrinks until the
masks are rebuilt), and an entry frozen by the rule gets back the value the rule froze it for, so the rule freezes it
again. The decision made after a step stands for the next one unless a weight changed in between (a rewind, a
`load_state_dict`, any in-place write bumps the parameters' version counters): then it is made again from the
current weights before the step.

Each engine compiles its own copies of the two functions (fresh code objects): dynamo keeps its compiled graphs, and
counts them against its recompile limit (8), per code object, so one shared function would stop compiling (and
fall back) after the eighth network shape in a process. Per engine, one pruner's targets give one graph per hook.

Only the built-in rules and float32 targets are compiled; anything else, or a `torch.compile` that fails (no C++
compiler on a CPU, no Triton on CUDA), falls back to the eager step with one `StepFallbackWarning`.
"""
import torch
import types

from dupru_basicsr.pruning.eager_step import EagerStep
from dupru_basicsr.pruning.engine import StepEngine, warn_fallback
from dupru_basicsr.pruning.freeze import FREEZE_RULES


def can_compile(rule, params):
    """Whether the compiled step supports this freeze rule and these targets: built-in rules, float32 targets."""
    return rule in FREEZE_RULES.values() and all(p.dtype == torch.float32 for p in params)


def _mask_grads(grads, learning):
    for g, learn in zip(grads, learning):
        if g is not None:  # a target that took no part in the loss has no gradient (the optimizer skips it)
            bits = g.view(torch.int32)
            bits.copy_(bits * learn)


def _fresh(fn):
    """A copy of `fn` with a code object of its own, so that dynamo's graphs (and recompile limit) are its own."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _compile(fn):
    return torch.compile(_fresh(fn), dynamic=False, fullgraph=True)


def _make_after_step(rule, eps):
    """The compiled after-step pass for `rule` (see the module docstring). Inputs are lists of int32 views."""

    def after_step(weight_bits, learning, saved):
        for w, learn, save in zip(weight_bits, learning, saved):
            new = w * learn + save  # one of the two terms is 0: exact on the bit patterns
            frozen = rule(new.view(torch.float32), learn.bool(), eps)
            learn_next = learn * (~frozen).to(torch.int32)
            save.copy_(new - new * learn_next)
            learn.copy_(learn_next)
            w.copy_(new)

    return _compile(after_step)


class CompiledTargets:
    """Persistent buffers of the compiled step over all target tensors: the 0/1 learning mask of the next step and
    the saved values of its frozen entries (int32 bit patterns), both decided from the current weights when built.
    Valid while the masks, the parameters' storage and (between steps) their version counters are the ones it
    recorded."""

    def __init__(self, params, mask, rule, eps):
        self.params = list(params.values())
        self.mask, self.mask_version = mask, mask.version
        self.data_ptrs = [p.data_ptr() for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.weight_bits = [p.detach().view(torch.int32) for p in self.params]
        first = self.params[0]
        self.learning = torch.empty(sum(self.sizes), dtype=torch.int32, device=first.device)
        self.learning_slots = self.slots(self.learning)
        self.saved = torch.empty_like(self.learning)
        self.saved_slots = self.slots(self.saved)
        self.rule, self.eps = rule, eps
        self.decide(list(params))
        self.versions = None  # the parameters' versions after our last write (None: decided before a step)

    def slots(self, flat):
        return [v.view(p.shape) for v, p in zip(flat.split(self.sizes), self.params)]

    def matches(self, mask, params):
        return (mask is self.mask and mask.version == self.mask_version
                and all(p.data_ptr() == ptr for p, ptr in zip(params.values(), self.data_ptrs)))

    def decide(self, names):
        """Learning mask and saved values from the current weights and keep-masks (eager, at a rebuild or after an
        outside write to the weights)."""
        with torch.no_grad():
            for name, w, bits, learn, save in zip(names, self.params, self.weight_bits, self.learning_slots,
                                                  self.saved_slots):
                frozen = self.rule(w.detach(), self.mask[name], self.eps)
                torch.gt(self.mask[name], frozen, out=learn)  # keep and not frozen
                torch.mul(bits, 1 - learn, out=save)
        self.versions = None

    def stale(self):
        """Whether a weight was written since our after-step pass (its decision no longer holds)."""
        return self.versions is not None and any(p._version != v for p, v in zip(self.params, self.versions))

    def mask_grads(self, grads):
        """before_step's masking, eager (the fallback when compiling fails at the first call)."""
        _mask_grads(grads, self.learning_slots)

    def restore(self):
        """The restore of after_step alone, eager (the fallback when compiling fails at the first call)."""
        torch._foreach_mul_(self.weight_bits, self.learning_slots)
        torch._foreach_add_(self.weight_bits, self.saved_slots)

    def recorded_write(self):
        self.versions = [p._version for p in self.params]


class CompiledStep(StepEngine):
    """The freezing step as one compiled pass per hook (see the module docstring). Where this rule or these targets
    are not supported, it hands the step to an `EagerStep` at once; where torch.compile fails at a function's first
    call, it finishes that step eagerly on its own buffers; either way with one StepFallbackWarning, and the eager
    step takes over (`replacement`). `compiled_calls` counts the calls that ran compiled code."""

    name = 'compiled'

    def __init__(self):
        super().__init__()
        self.targets = None  # CompiledTargets
        self._mask_grads = None  # the compiled functions of this engine (made at its first step)
        self._after_step = None
        self._works = set()  # the compiled functions whose first call (the compile) succeeded
        self._eager = None  # the EagerStep that runs this step where compiling is not supported
        self.compiled_calls = 0

    def _prepare(self, pruner):
        """The buffers for the pruner's masks and weights (rebuilt, or decided again after an outside write); None
        where the compiled step does not support this rule or these targets (warned)."""
        flat = self.targets
        if flat is None or not flat.matches(pruner.mask, pruner.params):
            pruner.follow_params()  # a model moved to another device has new storage: checked only then
            if not can_compile(pruner.freeze_rule, pruner.params.values()):
                warn_fallback(f'pruning step "compiled" supports the built-in methods ({", ".join(FREEZE_RULES)}) '
                              f'on float32 targets; method {pruner.method} on '
                              f'{next(iter(pruner.params.values())).dtype} targets uses the eager step.')
                return None
            if self._after_step is None:
                try:
                    self._mask_grads = _compile(_mask_grads)
                    self._after_step = _make_after_step(pruner.freeze_rule, pruner.eps)
                except Exception as e:  # torch.compile itself is lazy: most failures come at the first call
                    self._failed(e)
                    return None
            flat = self.targets = CompiledTargets(pruner.params, pruner.mask, pruner.freeze_rule, pruner.eps)
        elif flat.stale():
            flat.decide(list(pruner.params))  # a weight was written since the last step: decide again
        return flat

    def _failed(self, error):
        warn_fallback(f'pruning step "compiled": torch.compile failed ({type(error).__name__}: '
                      f'{str(error).splitlines()[0] if str(error) else ""}); using the eager step.')
        self.replacement = self.replacement or EagerStep()

    def _call(self, fn, args, fallback):
        """Call a compiled function; where its first call (the compile) fails (no C++ compiler, no Triton, ...),
        warn, do this step's work with `fallback` (eager, the same result) and name the eager step as successor."""
        if fn in self._works:
            fn(*args)
            self.compiled_calls += 1
            return
        try:
            fn(*args)
        except Exception as e:  # the first call compiles
            self._failed(e)
            fallback(*args)
            return
        self._works.add(fn)
        self.compiled_calls += 1

    def before_step(self, pruner):
        flat = None if self.replacement is not None else self._prepare(pruner)
        if flat is None:  # not supported here: this step (and every later one) is the eager step's
            self._eager = self.replacement = self.replacement or EagerStep()
            self._eager.before_step(pruner)
            self.learning = self._eager.learning
            return
        with torch.no_grad():
            self._call(self._mask_grads, ([p.grad for p in flat.params], flat.learning_slots),
                       fallback=lambda grads, learning: flat.mask_grads(grads))
        self.learning = flat.learning

    def after_step(self, pruner):
        if self._eager is not None:
            self._eager.after_step(pruner)
            return
        flat = self.targets
        with torch.no_grad():
            if self.replacement is not None:  # compiling failed in this step's before_step
                flat.restore()
            else:
                self._call(self._after_step, (flat.weight_bits, flat.learning_slots, flat.saved_slots),
                           fallback=lambda *args: flat.restore())
                flat.recorded_write()

    def buffers(self):
        return [] if self.targets is None else [self.targets.learning, self.targets.saved]

    def release(self):
        self.targets = None
