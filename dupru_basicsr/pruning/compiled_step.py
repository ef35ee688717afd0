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

Only the built-in rules and float32 targets are compiled; anything else, or a `torch.compile` that fails (no C++
compiler on a CPU, no Triton on CUDA), falls back to the eager step with one warning.
"""
import torch
import warnings

from dupru_basicsr.pruning.freeze import FREEZE_RULES


def can_compile(rule, params):
    """Whether the compiled step supports this freeze rule and these targets: built-in rules, float32 targets."""
    return rule in FREEZE_RULES.values() and all(p.dtype == torch.float32 for p in params)


def _mask_grads(grads, learning):
    for g, learn in zip(grads, learning):
        if g is not None:  # a target that took no part in the loss has no gradient (the optimizer skips it)
            bits = g.view(torch.int32)
            bits.copy_(bits * learn)


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

    return torch.compile(after_step, dynamic=False, fullgraph=True)


_compiled_mask_grads = None


def compiled_mask_grads():
    """The compiled before-step function (one for every pruner: it has no constants of a rule)."""
    global _compiled_mask_grads
    if _compiled_mask_grads is None:
        _compiled_mask_grads = torch.compile(_mask_grads, dynamic=False, fullgraph=True)
    return _compiled_mask_grads


class CompiledTargets:
    """Persistent buffers of the compiled step over all target tensors: the 0/1 learning mask of the next step and
    the saved values of its frozen entries (int32 bit patterns), both decided from the current weights when built.
    Valid while the masks, the parameters' storage and (between steps) their version counters are the ones it
    recorded."""

    def __init__(self, params, mask, rule, eps, compiled_fn):
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
        self.rule, self.eps, self.compiled_fn = rule, eps, compiled_fn
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

    def before_step(self, grads):
        """Zero the gradients of the frozen entries: their bit patterns times the 0/1 learning mask, in one compiled
        pass (`grads`: the targets' .grad, None for a target that took no part in the loss)."""
        compiled_mask_grads()(grads, self.learning_slots)

    def mask_grads(self, grads):
        """before_step's masking, eager (the fallback when compiling fails at the first call)."""
        _mask_grads(grads, self.learning_slots)

    def restore(self):
        """The restore of after_step alone, eager (the fallback when compiling fails at the first call)."""
        torch._foreach_mul_(self.weight_bits, self.learning_slots)
        torch._foreach_add_(self.weight_bits, self.saved_slots)

    def after_step(self):
        self.compiled_fn(self.weight_bits, self.learning_slots, self.saved_slots)
        self.versions = [p._version for p in self.params]


def compiled_after_step(rule, eps):
    """The compiled after-step function for `rule` and `eps`, or None with a warning when torch.compile is not
    usable here (the caller falls back to the eager step)."""
    try:
        return _make_after_step(rule, eps)
    except Exception as e:  # torch.compile itself is lazy: most failures come at the first call (see Pruner)
        warnings.warn(f'pruning step: torch.compile is not usable here ({type(e).__name__}: {e}); using the eager '
                      'step.')
        return None
