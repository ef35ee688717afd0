"""Pruner: masks, rewinding and per-step freezing for the target parameters of any nn.Module."""
import torch
from collections import OrderedDict

from dupru_basicsr.pruning.freeze import FREEZE_RULES
from dupru_basicsr.pruning.mask import Mask
from dupru_basicsr.pruning.scopes import SCOPES
from dupru_basicsr.pruning.targets import DEFAULT_TARGETS, select_targets

REWIND_MODES = ('init', 'iter', 'none', 'lr', 'reinit')


class Pruner:
    """Prunes the parameters of `model` matched by `targets` and keeps them pruned/frozen while training.

    - `prune(rate)`: new keep-masks from the current |W| of the survivors (layer or global scope), applied at once.
    - `snapshot()`: records the rewind point (all parameters and buffers, e.g. W0 before training).
    - `rewind(mode)`: init/iter -> rewind point ⊙ mask, none -> current weights ⊙ mask, reinit -> a fresh state ⊙ mask.
    - masks live on the targets' device and follow them: after `model.to()` / `.cuda()` the next prune, mask
      application or step moves them (a cheap device comparison, no device work when nothing moved);
    - under torch.distributed, `prune` is collective: every rank computes its masks from its own (synchronised)
      weights, then one small all-reduce of a mask checksum checks that all ranks agree (`check_masks_agree`).
    - `attach(optimizer)`: optimizer hooks; before each step the frozen set is decided from the current weights
      (freeze rule of `method`, plus every pruned entry) and its gradients are zeroed; after the step frozen entries
      get back their exact previous value and pruned entries are exactly 0.0, whatever the optimizer does. Both
      hooks issue a fixed number of ops on flat buffers, whatever the number of target tensors, and never wait for
      the device; statistics (`frozen_fraction`, `stats`) are counted only when asked. During and after a step the
      targets' `.grad` are views of the pruner's flat gradient buffer (the masked gradients).
    """

    def __init__(self, model, targets=DEFAULT_TARGETS, method='dupru', eps=1e-6, scope='layer', lookup=None):
        # method / scope: a name, or a callable (a custom freeze rule `(weight, keep_mask, eps) -> bool tensor`, or a
        # threshold scope `(weights, mask, rate=None, sparsity=None) -> (Mask, thresholds)`). Names resolve with
        # `lookup(name, kind)` (kind 'freeze' or 'scope'; e.g. plugin.registry.lookup), else the built-ins.
        self.freeze_rule = self._resolve(method, FREEZE_RULES, 'freeze', lookup)
        self.threshold_scope = self._resolve(scope, SCOPES, 'scope', lookup)
        self.model = model
        self.targets = list(targets)
        self.params = select_targets(model, self.targets)
        self.method = method if isinstance(method, str) else method.__name__
        self.scope = scope if isinstance(scope, str) else scope.__name__
        self.eps = float(eps)
        self.mask = Mask.ones_like(self.params)
        self.rewind_state = None
        self.last_thresholds = {}
        self._flat_targets = None  # _FlatTargets: persistent buffers of the fused step
        self._stepping = None  # the _FlatTargets of a step between before_step and after_step
        self._last_learning = None  # the entries that learnt in the last step (flat), counted by frozen_fraction()
        self._handles = []

    @staticmethod
    def _resolve(rule, builtins, kind, lookup):
        if callable(rule):
            return rule
        if lookup is not None:
            return lookup(rule, kind)
        if rule not in builtins:
            what = 'method' if kind == 'freeze' else 'scope'
            raise ValueError(f'Unknown pruning {what} "{rule}"; use one of {", ".join(builtins)} or pass a callable.')
        return builtins[rule]

    # ----------------------------------------------------------------------------------------------- pruning
    def prune(self, rate=None, sparsity=None):
        """Remove `rate` % of the surviving target weights (smallest |W|), or as many as bring the pruned fraction
        (per tensor, or over all targets with global scope) to `sparsity`. Returns the thresholds used."""
        with torch.no_grad():
            self._follow_params()
            self.mask, self.last_thresholds = self.threshold_scope(self.params, self.mask, rate, sparsity)
            self.apply_mask()
        check_masks_agree(self.mask)
        return self.last_thresholds

    def apply_mask(self, module=None):
        """Zero the pruned entries of `module` (default: the pruned model; pass e.g. an EMA copy of it)."""
        params = self.params if module is None else select_targets(module, self.targets)
        self._follow_params()
        with torch.no_grad():
            # bits * keep: exactly masked_fill_(~keep, 0.0), vectorised (see before_step)
            torch._foreach_mul_([_bits(p.detach()) for p in params.values()], [self.mask[n] for n in params])

    def _follow_params(self):
        """Move the masks to the targets' device when the model moved (model.to(), .cuda(), a Mask loaded on the
        CPU): a new Mask object, so the fused step's buffers are rebuilt. Compares devices only (no device work)."""
        if any(self.mask[n].device != p.device for n, p in self.params.items()):
            self.mask = Mask(OrderedDict((n, self.mask[n].to(p.device)) for n, p in self.params.items()))

    # ----------------------------------------------------------------------------------------------- rewinding
    def snapshot(self):
        """Record the rewind point: a copy of every parameter and buffer of the model as it is now."""
        self.rewind_state = OrderedDict((k, v.detach().clone()) for k, v in self.model.state_dict().items())

    def rewind(self, mode='init', fresh_state=None):
        """Reset the weights at a round boundary, then re-apply the mask.

        init / iter: the snapshot (W0 or W_k) ⊙ mask, for all parameters and buffers (as the reference code);
        none / lr: the current (trained) weights ⊙ mask (fine-tuning and learning-rate rewinding differ only in the
        LR schedule, which is the trainer's business); reinit: `fresh_state` (a new random init) ⊙ mask.
        """
        if mode in ('init', 'iter'):
            if self.rewind_state is None:
                raise RuntimeError('rewind("init") needs a snapshot(): none was taken.')
            self.model.load_state_dict(self.rewind_state)
        elif mode == 'reinit':
            if fresh_state is None:
                raise ValueError('rewind("reinit") needs fresh_state, the state_dict of a freshly initialised model.')
            self.model.load_state_dict(fresh_state)
        elif mode not in ('none', 'lr'):
            raise ValueError(f'Unknown rewind mode "{mode}"; use one of {", ".join(REWIND_MODES)}.')
        self.apply_mask()

    # ----------------------------------------------------------------------------------------------- freezing
    def _flat(self):
        """The fused step's buffers for the current masks and parameter storage, rebuilt when either changed
        (prune, Mask.load_state_dict, a new Mask assigned, model.to(), p.data replaced). Comparing the data
        pointers is cheap and needs no device work; load_state_dict and rewinds copy in place and keep them."""
        flat = self._flat_targets
        if flat is None or not flat.matches(self.mask, self.params):
            self._follow_params()  # a model moved to another device has new storage: checked only then
            flat = self._flat_targets = _FlatTargets(self.params, self.mask)
        return flat

    def _decide(self, flat, weights, learning, frozen=None):
        """Fill the flat buffers `learning` (kept and not frozen by the freeze rule) and `frozen` (the rest: rule ∪
        pruned) for the flat buffer `weights`; bool or 0/1 integers. On bools, keep > rule is keep and not rule,
        keep <= rule is not keep or rule."""
        if getattr(self.freeze_rule, 'elementwise', False):
            rule = self.freeze_rule(weights, flat.keep, self.eps)
            torch.gt(flat.keep, rule, out=learning)
            if frozen is not None:
                torch.le(flat.keep, rule, out=frozen)
            return
        # a rule that may depend on the tensor's shape: called per target tensor, with that tensor's shape
        frozen_slots = flat.slots(frozen) if frozen is not None else [None] * len(flat.params)
        for name, w, keep, learn, froze in zip(self.params, flat.slots(weights), flat.keep_slots,
                                               flat.slots(learning), frozen_slots):
            rule = self.freeze_rule(w, self.mask[name], self.eps)
            torch.gt(keep, rule, out=learn)
            if froze is not None:
                torch.le(keep, rule, out=froze)

    def frozen_masks(self):
        """{name: bool tensor} of the entries frozen for the next step (freeze rule ∪ pruned)."""
        flat = self._flat()
        weights, learning = torch.empty_like(flat.saved), torch.empty_like(flat.keep)
        with torch.no_grad():
            torch._foreach_copy_(flat.slots(weights), flat.weights)
            self._decide(flat, weights, learning)
        return OrderedDict(zip(self.params, flat.slots(~learning)))

    def frozen_fraction(self):
        """Fraction of target entries frozen at the last optimizer step (pruned ones included). Counted when asked
        (a host sync on a GPU): call it when logging, not every step."""
        if self._last_learning is None:
            return 0.0
        return 1.0 - int(self._last_learning.sum()) / max(self._last_learning.numel(), 1)

    def before_step(self, *args, **kwargs):
        # Frozen = the rule's entries plus the pruned ones. Their gradients are zeroed (paper eq. 4), and after the
        # step they get back the values saved here, which makes them bit-identical (pruned ones exactly 0.0: prune,
        # rewind and resume apply the mask) whatever momentum or weight decay do.
        # A fixed number of ops on flat buffers whatever the number of targets (one per line here), and no host
        # sync. The masking multiplies the integer bit patterns by 0/1 (x * 1 = x, x * 0 = the bits of +0.0) and
        # adds terms of which one is 0: exact for every value (NaN, inf, -0.0), free of integer overflow, and
        # vectorised, where a masked_fill or where with a scattered bool mask runs a branchy loop on a CPU.
        flat = self._flat()
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
            self._decide(flat, flat.saved, flat.learning, flat.frozen)
            if fused_grads:
                flat.grad_bits.mul_(flat.learning)
            else:  # some target took no part in the loss: the optimizer skips it, only the others are masked
                for g, learning in zip(grads, flat.learning_slots):
                    if g is not None:
                        _bits(g).mul_(learning)
        self._last_learning = flat.learning
        self._stepping = flat

    def after_step(self, *args, **kwargs):
        flat, self._stepping = self._stepping, None
        with torch.no_grad():
            # w = w * learning + saved * frozen, on the bit patterns
            torch._foreach_mul_(flat.weight_bits, flat.learning_slots)
            torch._foreach_addcmul_(flat.weight_bits, flat.saved_bit_slots, flat.frozen_slots)

    def attach(self, optimizer):
        """Hook `optimizer` so that every step respects the masks and the freeze rule. Returns the hook handles."""
        handles = [optimizer.register_step_pre_hook(self.before_step),
                   optimizer.register_step_post_hook(self.after_step)]
        self._handles.extend(handles)
        return handles

    def detach(self):
        """Remove the optimizer hooks and release the fused step's buffers (rebuilt at the next step)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._flat_targets = None

    # ----------------------------------------------------------------------------------------------- state
    def stats(self):
        """Sparsity numbers for logs: targets, whole model, per layer, frozen fraction (not for every step: it
        counts every mask)."""
        total = sum(p.numel() for p in self.model.parameters())
        pruned = self.mask.numel() - self.mask.num_kept()
        return {
            'target_sparsity': self.mask.sparsity(),
            'model_sparsity': pruned / max(total, 1),
            'kept': self.mask.num_kept(),
            'target_numel': self.mask.numel(),
            'frozen_fraction': self.frozen_fraction(),
            'layer_sparsity': self.mask.layer_sparsity(),
        }

    def state_dict(self):
        return {
            'targets': list(self.targets),
            'method': self.method,
            'eps': self.eps,
            'scope': self.scope,
            'keep_masks': self.mask.state_dict(),
            'rewind_state': None if self.rewind_state is None else OrderedDict(
                (k, v.detach().cpu().clone()) for k, v in self.rewind_state.items()),
            'thresholds': dict(self.last_thresholds),
        }

    def load_state_dict(self, state):
        for key in ('method', 'scope'):
            if state[key] != getattr(self, key):
                raise ValueError(f'Pruning state was saved with {key}={state[key]!r} but this run uses '
                                 f'{getattr(self, key)!r}; resume with the same pruning options.')
        if list(state['keep_masks']) != list(self.params):
            raise ValueError('Pruning state was saved for other target parameters; resume with the same targets.')
        self.mask.load_state_dict(state['keep_masks'])
        self._follow_params()
        device = next(iter(self.params.values())).device
        self.rewind_state = None if state['rewind_state'] is None else OrderedDict(
            (k, v.to(device)) for k, v in state['rewind_state'].items())
        self.last_thresholds = dict(state.get('thresholds') or {})


def mask_checksum(mask):
    """A small int64 tensor that differs between two masks with different kept entries (almost surely): per tensor,
    the number of kept entries and the sum of a hash of their positions, on the masks' device."""
    sums = []
    for _, m in mask.items():
        flat = m.reshape(-1)
        # a non-linear 31-bit hash of the position (a linear one would give a+b == c+d collisions); products stay
        # below 2**62 and sums below 2**63 up to ~4 * 10**9 entries
        h = (torch.arange(flat.numel(), device=flat.device, dtype=torch.int64) * 1103515245 + 12345) % 2**31
        h = h ^ (h >> 16)
        h = (h * 1597334677) % 2**31
        weights = h ^ (h >> 13)
        sums.append(torch.stack([flat.sum(dtype=torch.int64), (weights * flat).sum()]))
    return torch.cat(sums)


def check_masks_agree(mask, group=None):
    """Under torch.distributed (world size > 1), check that every rank holds the same masks: one all-reduce of
    [checksum, -checksum] with MAX (max == min on every entry when all agree). Raises RuntimeError on every rank
    when they differ (ranks whose weights drifted apart, e.g. a seed per rank before DDP synchronised them).
    A no-op without torch.distributed."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) < 2:
        return
    checksum = mask_checksum(mask)
    if dist.get_backend(group) == 'nccl' and checksum.device.type != 'cuda':
        checksum = checksum.cuda()
    both = torch.cat([checksum, -checksum])
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    n = checksum.numel()
    if not torch.equal(both[:n], -both[n:]):
        raise RuntimeError(f'The pruning masks differ between the {dist.get_world_size(group)} ranks (rank '
                           f'{dist.get_rank(group)} of them): the ranks pruned different weights. Every rank must '
                           'hold the same weights when it prunes (DDP synchronises them; load the same checkpoint on '
                           'every rank and do not change the weights of one rank).')


_BIT_TYPES = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t):
    """An integer view of the float tensor `t` (same storage, same bit patterns)."""
    return t.view(_BIT_TYPES[t.element_size()])


class _FlatTargets:
    """Persistent flat buffers over all target tensors, and their per-tensor views, for the fused step.

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
        self.weight_bits = [_bits(w) for w in self.weights]
        self.keep = torch.cat([mask[n].reshape(-1) for n in params]).to(first.device)
        self.keep_slots = self.slots(self.keep)
        self.saved = torch.empty(sum(self.sizes), dtype=first.dtype, device=first.device)  # weights before the step
        self.saved_slots = self.slots(self.saved)
        self.saved_bit_slots = self.slots(_bits(self.saved))
        self.grad = torch.empty_like(self.saved)
        self.grad_slots = self.slots(self.grad)
        self.grad_bits = _bits(self.grad)
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
