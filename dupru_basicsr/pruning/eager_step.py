"""The eager freezing step (`Pruner(step='eager')`, the default): eager ops on persistent flat buffers."""
import torch

from dupru_basicsr.pruning.engine import StepEngine, bits


class FlatTargets:
    """Persistent flat buffers over all target tensors, and their per-tensor views, for the eager step.

    Valid while the masks and the parameters' storage are the ones it was built from (`matches`). Holds 17 bytes
    per fp32 target entry: saved values, gradients, learning and frozen masks (4 each), the keep-mask (1).
    """

    def __init__(self, params, mask):
        self.params = list(params.values())
        first = self.params[0]
        for name, p in params.items():
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(f'Pruning targets must share one dtype and device: "{name}" is {p.dtype} on '
                                 f'{p.device}, "{next(iter(params))}" is {first.dtype} on {first.device}.')
        self.mask, self.mask_version = mask, mask.version
        self.data_ptrs = [p.data_ptr() for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.weights = [p.detach() for p in self.params]  # share the parameters' storage
        self.weight_bits = [bits(w) for w in self.weights]
        self.keep = torch.cat([mask[n].reshape(-1) for n in params]).to(first.device)
        self.keep_slots = self.slots(self.keep)
        self.saved = torch.empty(sum(self.sizes), dtype=first.dtype, device=first.device)  # weights before the step
        self.saved_slots = self.slots(self.saved)
        self.saved_bit_slots = self.slots(bits(self.saved))
        self.grad = torch.empty_like(self.saved)
        self.grad_slots = self.slots(self.grad)
        self.grad_bits = bits(self.grad)
        # 0/1 masks of the entries that learn in this step and of the frozen ones, integers of the bit type: they
        # multiply the bit patterns without a per-op type conversion
        self.learning = torch.empty_like(self.grad_bits)
        self.learning_slots = self.slots(self.learning)
        self.frozen = torch.empty_like(self.grad_bits)
        self.frozen_slots = self.slots(self.frozen)

    def matches(self, mask, params):
        return (mask is self.mask and mask.version == self.mask_version
                and all(p.data_ptr() == ptr for p, ptr in zip(params.values(), self.data_ptrs)))

    def slots(self, flat):
        """Views of the flat buffer `flat` shaped like the target tensors, in order."""
        return [v.view(p.shape) for v, p in zip(flat.split(self.sizes), self.params)]


class EagerStep(StepEngine):
    """The freezing step in eager ops on flat buffers: a fixed number of ops per hook whatever the number of target
    tensors, no host sync, exact for every value (the masking multiplies bit patterns by 0/1)."""

    name = 'eager'

    def __init__(self):
        super().__init__()
        self.flat = None  # FlatTargets, rebuilt when the masks or the parameters' storage changed
        self._stepping = None  # the FlatTargets of a step between before_step and after_step

    def targets(self, pruner):
        """The buffers for the pruner's current masks and parameter storage, rebuilt when either changed (prune,
        Mask.load_state_dict, a new Mask assigned, model.to(), p.data replaced). Comparing the data pointers is
        cheap and needs no device work; load_state_dict and rewinds copy in place and keep them."""
        if self.flat is None or not self.flat.matches(pruner.mask, pruner.params):
            pruner.follow_params()  # a model moved to another device has new storage: checked only then
            self.flat = FlatTargets(pruner.params, pruner.mask)
        return self.flat

    def before_step(self, pruner):
        # Frozen = the rule's entries plus the pruned ones. Their gradients are zeroed (paper eq. 4), and after the
        # step they get back the values saved here, which makes them bit-identical (pruned ones exactly 0.0: prune,
        # rewind and resume apply the mask) whatever momentum or weight decay do.
        # A fixed number of ops on flat buffers whatever the number of targets (one per line here), and no host
        # sync. The masking multiplies the integer bit patterns by 0/1 (x * 1 = x, x * 0 = the bits of +0.0) and
        # adds terms of which one is 0: exact for every value (NaN, inf, -0.0), free of integer overflow, and
        # vectorised, where a masked_fill or where with a scattered bool mask runs a branchy loop on a CPU.
        flat = self.targets(pruner)
        with torch.no_grad():
            grads = [p.grad for p in flat.params]  # fresh tensors every step (zero_grad sets them to None)
            fused_grads = all(g is not None for g in grads)
            if fused_grads:
                # gathered first: the optimizer gets the views of the flat buffer as gradients (a Python attribute,
                # not an op; the next backward makes fresh ones or accumulates into these), and the memory of the
                # fresh ones is free again before the rule's temporaries are allocated
                torch._foreach_copy_(flat.grad_slots, grads)
                for p, g in zip(flat.params, flat.grad_slots):
                    p.grad = g
                grads = None
            torch._foreach_copy_(flat.saved_slots, flat.weights)
            self.decide(pruner, flat, flat.saved, flat.learning, flat.frozen)
            if fused_grads:
                flat.grad_bits.mul_(flat.learning)
            else:  # some target took no part in the loss: the optimizer skips it, only the others are masked
                for g, learning in zip(grads, flat.learning_slots):
                    if g is not None:
                        bits(g).mul_(learning)
        self.learning = flat.learning
        self._stepping = flat

    @staticmethod
    def decide(pruner, flat, weights, learning, frozen=None):
        """Fill the flat buffers `learning` (kept and not frozen by the freeze rule) and `frozen` (the rest: rule ∪
        pruned) for the flat buffer `weights`; bool or 0/1 integers. On bools, keep > rule is keep and not rule,
        keep <= rule is not keep or rule."""
        rule, eps = pruner.freeze_rule, pruner.eps
        if getattr(rule, 'elementwise', False):
            frozen_by_rule = rule(weights, flat.keep, eps)
            torch.gt(flat.keep, frozen_by_rule, out=learning)
            if frozen is not None:
                torch.le(flat.keep, frozen_by_rule, out=frozen)
            return
        # a rule that may depend on the tensor's shape: called per target tensor, with that tensor's shape
        frozen_slots = flat.slots(frozen) if frozen is not None else [None] * len(flat.params)
        for name, w, keep, learn, froze in zip(pruner.params, flat.slots(weights), flat.keep_slots,
                                               flat.slots(learning), frozen_slots):
            frozen_by_rule = rule(w, pruner.mask[name], eps)
            torch.gt(keep, frozen_by_rule, out=learn)
            if froze is not None:
                torch.le(keep, frozen_by_rule, out=froze)

    def after_step(self, pruner):
        flat, self._stepping = self._stepping, None
        with torch.no_grad():
            # w = w * learning + saved * frozen, on the bit patterns
            torch._foreach_mul_(flat.weight_bits, flat.learning_slots)
            torch._foreach_addcmul_(flat.weight_bits, flat.saved_bit_slots, flat.frozen_slots)

    def buffers(self):
        flat = self.flat
        return [] if flat is None else [flat.saved, flat.grad, flat.learning, flat.frozen, flat.keep]

    def release(self):
        self.flat = None
