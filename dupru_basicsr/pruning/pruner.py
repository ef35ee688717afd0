"""Pruner: masks, rewinding and per-step freezing for the target parameters of any nn.Module."""
import torch
from collections import OrderedDict

import warnings

from dupru_basicsr.pruning.compiled_step import CompiledTargets, can_compile, compiled_after_step
from dupru_basicsr.pruning.freeze import FREEZE_RULES
from dupru_basicsr.pruning.mask import Mask
from dupru_basicsr.pruning.scopes import SCOPES
from dupru_basicsr.pruning.targets import DEFAULT_TARGETS, select_targets

REWIND_MODES = ('init', 'iter', 'none', 'lr', 'reinit')
STEP_MODES = ('eager', 'compiled')  # the freezing step: eager ops (_FlatTargets) or one compiled pass (compiled_step)

# Optimizer state of pruned entries (see Pruner._settle_optimizer_state): first moments and momentum held at 0.0,
# second moments at 1.0. Pruned entries get a zero gradient and are 0.0 after every step, so their state only costs
# time: torch's CPU sqrt of exact zeros (Adam's second moment of an entry that never had a gradient) is 9x slower
# than of other numbers, and moments that decay without gradients become subnormal, which is slow everywhere.
STATE_HELD_AT = {'exp_avg': 0.0, 'momentum_buffer': 0.0, 'exp_avg_sq': 1.0, 'max_exp_avg_sq': 1.0}
SETTLE_EVERY = 500  # steps between two settlings (1.0 * 0.99 ** 500 = 0.0066: far from subnormal)


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

    def __init__(self, model, targets=DEFAULT_TARGETS, method='dupru', eps=1e-6, scope='layer', lookup=None,
                 step='eager'):
        # method / scope: a name, or a callable (a custom freeze rule `(weight, keep_mask, eps) -> bool tensor`, or a
        # threshold scope `(weights, mask, rate=None, sparsity=None) -> (Mask, thresholds)`). Names resolve with
        # `lookup(name, kind)` (kind 'freeze' or 'scope'; e.g. plugin.registry.lookup), else the built-ins.
        # step: 'eager' or 'compiled' (torch.compile of the after-step pass, compiled_step; built-in rules and float32
        # targets only, else, or where compiling fails, the eager step with a warning)
        if step not in STEP_MODES:
            raise ValueError(f'Unknown pruning step "{step}"; use one of {", ".join(STEP_MODES)}.')
        self.step = step
        self._compiled_fn, self._compiled_works = None, {}
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
        self.settle_optimizer_state = True  # hold pruned entries' optimizer state at cheap values (STATE_HELD_AT)
        self._settled = (None, None, 0)  # (the settled state tensor of the first target, the masks, steps since)

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
        kind = CompiledTargets if self.step == 'compiled' else _FlatTargets
        if flat is None or type(flat) is not kind or not flat.matches(self.mask, self.params):
            self._follow_params()  # a model moved to another device has new storage: checked only then
            if kind is CompiledTargets and not self._compile_step():
                kind = _FlatTargets
            if kind is CompiledTargets:
                flat = CompiledTargets(self.params, self.mask, self.freeze_rule, self.eps, self._compiled_fn)
            else:
                flat = _FlatTargets(self.params, self.mask)
            self._flat_targets = flat
        elif kind is CompiledTargets and flat.stale():
            flat.decide(list(self.params))  # a weight was written since the last step: decide again
        return flat

    def _compile_step(self):
        """The compiled after-step function (made once per pruner); False, with step set to 'eager' and a warning,
        when this rule or these targets are not supported or torch.compile is not usable."""
        if not can_compile(self.freeze_rule, self.params.values()):
            warnings.warn(f'pruning step "compiled" supports the built-in methods ({", ".join(FREEZE_RULES)}) on '
                          f'float32 targets; method {self.method} on {next(iter(self.params.values())).dtype} targets '
                          'uses the eager step.')
            self.step = 'eager'
            return False
        if self._compiled_fn is None:
            self._compiled_fn = compiled_after_step(self.freeze_rule, self.eps)
            if self._compiled_fn is None:
                self.step = 'eager'
                return False
        return True

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
        self._follow_params()
        with torch.no_grad():
            return OrderedDict((n, ~torch.gt(self.mask[n], self.freeze_rule(p.detach(), self.mask[n], self.eps)))
                               for n, p in self.params.items())

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
        if isinstance(flat, CompiledTargets):
            with torch.no_grad():
                self._compiled_call(flat.before_step, [p.grad for p in flat.params], fallback=flat.mask_grads)
            self._last_learning = flat.learning
            self._stepping = flat
            return
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

    def after_step(self, optimizer=None, *args, **kwargs):
        flat, self._stepping = self._stepping, None
        with torch.no_grad():
            if isinstance(flat, CompiledTargets):
                self._compiled_after_step(flat)
            else:
                # w = w * learning + saved * frozen, on the bit patterns
                torch._foreach_mul_(flat.weight_bits, flat.learning_slots)
                torch._foreach_addcmul_(flat.weight_bits, flat.saved_bit_slots, flat.frozen_slots)
            if optimizer is not None and self.settle_optimizer_state:
                self._settle_optimizer_state(optimizer, flat)

    def _compiled_after_step(self, flat):
        if self.step == 'compiled':
            self._compiled_call(flat.after_step, fallback=flat.restore)
        else:  # compiling failed in this step's before_step
            flat.restore()
        if self.step == 'eager':
            self._flat_targets = None  # the next steps are eager

    def _compiled_call(self, fn, *args, fallback):
        """Call a compiled step function; where torch.compile fails at its first call (no C++ compiler, no Triton,
        ...), warn, do this step's work with `fallback` (eager, the same result) and switch to the eager step."""
        if self._compiled_works.get(fn.__name__):
            fn(*args)
            return
        try:
            fn(*args)
        except Exception as e:  # the first call compiles
            warnings.warn(f'pruning step "compiled": torch.compile failed ({type(e).__name__}: '
                          f'{str(e).splitlines()[0] if str(e) else ""}); using the eager step.')
            fallback(*args)
            self.step, self._compiled_fn = 'eager', None
            return
        self._compiled_works[fn.__name__] = True

    def _settle_optimizer_state(self, optimizer, flat):
        """Set the optimizer state of the pruned entries to STATE_HELD_AT (Adam's, AdamW's and SGD's moments; other
        state is left alone): once when the optimizer's state is new (first step, a fresh optimizer at a round start,
        a resume) or the masks changed (a prune), then every SETTLE_EVERY steps. It never changes a weight: pruned
        entries get a zero gradient and are 0.0 after every step, whatever their state; and it never touches the
        state of a kept entry (the optimizers update entry by entry). Only pruned entries are held because nothing
        but new masks makes them learn again (a rewind can unfreeze an entry that DUPru's |W| < eps rule froze)."""
        state = optimizer.state.get(flat.params[0])
        if not state:
            return
        first = next((state[k] for k in STATE_HELD_AT if k in state), None)
        settled, mask_version, steps = self._settled
        version = (self.mask, self.mask.version)
        if first is settled and mask_version == version and steps < SETTLE_EVERY:
            self._settled = (settled, mask_version, steps + 1)
            return
        self._settled = (first, version, 1)
        for name, p in self.params.items():
            pruned = None
            for key, value in STATE_HELD_AT.items():
                held = optimizer.state.get(p, {}).get(key)
                if isinstance(held, torch.Tensor) and held.shape == p.shape:
                    pruned = ~self.mask[name] if pruned is None else pruned
                    held.masked_fill_(pruned, value)

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
