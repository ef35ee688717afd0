"""Pruner: masks, rewinding and per-step freezing for the target parameters of any nn.Module."""
import torch
from collections import OrderedDict

from dupru_basicsr.pruning.distributed import check_masks_agree
from dupru_basicsr.pruning.engine import bits
from dupru_basicsr.pruning.freeze import FREEZE_RULES
from dupru_basicsr.pruning.granularity import block_size, check_blockable, prune_blocks
from dupru_basicsr.pruning.mask import Mask
from dupru_basicsr.pruning.optimizer_state import PrunedStateHolder
from dupru_basicsr.pruning.scopes import SCOPES
from dupru_basicsr.pruning.steps import make_step_engine
from dupru_basicsr.pruning.targets import DEFAULT_TARGETS, layer_weights, resolve_targets, select_targets

# rewind modes: init and iter rewind to the snapshot (W0 or W_k), none and lr keep the trained weights, reinit takes
# a fresh initialisation; the `pruning.rewind` option spells iter as iter_<k> (plugin.pruning_options)
REWIND_MODES = ('init', 'iter', 'none', 'lr', 'reinit')


class Pruner:
    """Prunes the parameters of `model` matched by `targets` and keeps them pruned/frozen while training.

    - `prune(rate)`: new keep-masks from the current |W| of the survivors (layer or global scope; single weights or
      blocks of output channels, `granularity`), applied at once.
    - `snapshot()`: records the rewind point (all parameters and buffers, e.g. W0 before training).
    - `rewind(mode)`: init/iter -> rewind point ⊙ mask, none -> current weights ⊙ mask, reinit -> a fresh state ⊙ mask.
    - masks live on the targets' device and follow them: after `model.to()` / `.cuda()` the next prune, mask
      application or step moves them (a cheap device comparison, no device work when nothing moved);
    - under torch.distributed, `prune` is collective: every rank computes its masks from its own (synchronised)
      weights, then one small all-reduce of a mask checksum checks that all ranks agree (`check_masks_agree`).
    - `attach(optimizer)`: optimizer hooks; before each step the frozen set is decided from the current weights
      (freeze rule of `method`, plus every pruned entry) and its gradients are zeroed; after the step frozen entries
      get back their exact previous value and pruned entries are exactly 0.0, whatever the optimizer does. The
      step engine (`step`: eager or compiled, pruning.steps) does this in a fixed number of ops or compiled calls
      whatever the number of target tensors, and never waits for the device; statistics (`frozen_fraction`,
      `stats`) are counted only when asked. With the eager step, the targets' `.grad` are views of its flat
      gradient buffer (the masked gradients) during and after a step.
    - after each step the optimizer state of the pruned entries is held at cheap values (`settle_optimizer_state`,
      pruning.optimizer_state).
    """

    def __init__(self, model, targets=DEFAULT_TARGETS, method='dupru', eps=1e-6, scope='layer', lookup=None,
                 step='eager', granularity='element'):
        # method / scope: a name, or a callable (a custom freeze rule `(weight, keep_mask, eps) -> bool tensor`, or a
        # threshold scope `(weights, mask, rate=None, sparsity=None) -> (Mask, thresholds)`). Names resolve with
        # `lookup(name, kind)` (kind 'freeze' or 'scope'; e.g. plugin.registry.lookup), else the built-ins.
        # step: the engine of the freezing step by name, 'eager' or 'compiled' (pruning.steps; compiled: built-in rules
        # and float32 targets only, else, or where compiling fails, the eager step with a StepFallbackWarning)
        self.engine = make_step_engine(step)
        self.freeze_rule = self._resolve(method, FREEZE_RULES, 'freeze', lookup)
        self.threshold_scope = self._resolve(scope, SCOPES, 'scope', lookup)
        self.model = model
        self.targets = resolve_targets(model, targets)  # patterns, or a preset (body, whole) of the model's class
        self.params = select_targets(model, self.targets)
        self.method = method if isinstance(method, str) else method.__name__
        self.scope = scope if isinstance(scope, str) else scope.__name__
        self.eps = float(eps)
        # granularity: element, or oc_block<N> (N output channels at one input position pruned together;
        # pruning.granularity)
        self.granularity = granularity
        self.block = block_size(granularity)
        check_blockable(self.params, self.block)
        self.mask = Mask.ones_like(self.params)
        self.rewind_state = None
        self.last_thresholds = {}
        self._handles = []
        self.settle_optimizer_state = True  # hold pruned entries' optimizer state at cheap values (STATE_HELD_AT)
        self._held_state = PrunedStateHolder()

    @property
    def step(self):
        """The name of the freezing step's engine now in use ('eager' after a fallback from 'compiled')."""
        return self.engine.name

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
            self.follow_params()
            if self.block == 1:
                self.mask, self.last_thresholds = self.threshold_scope(self.params, self.mask, rate, sparsity)
            else:  # the scope's thresholds over blocks of output channels (pruning.granularity)
                self.mask, self.last_thresholds = prune_blocks(self.threshold_scope, self.params, self.mask,
                                                               self.block, rate, sparsity)
            self.apply_mask()
        check_masks_agree(self.mask)
        return self.last_thresholds

    def apply_mask(self, module=None):
        """Zero the pruned entries of `module` (default: the pruned model; pass e.g. an EMA copy of it)."""
        params = self.params if module is None else select_targets(module, self.targets)
        self.follow_params()
        with torch.no_grad():
            # bits * keep: exactly masked_fill_(~keep, 0.0), vectorised (see before_step)
            torch._foreach_mul_([bits(p.detach()) for p in params.values()], [self.mask[n] for n in params])

    def follow_params(self):
        """Move the masks to the targets' device when the model moved (model.to(), .cuda(), a Mask loaded on the
        CPU): a new Mask object, so the step engine's buffers are rebuilt. Compares devices only (no device work)."""
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
    def frozen_masks(self):
        """{name: bool tensor} of the entries frozen for the next step (freeze rule ∪ pruned)."""
        self.follow_params()
        with torch.no_grad():
            return OrderedDict((n, ~torch.gt(self.mask[n], self.freeze_rule(p.detach(), self.mask[n], self.eps)))
                               for n, p in self.params.items())

    def frozen_fraction(self):
        """Fraction of target entries frozen at the last optimizer step (pruned ones included). Counted when asked
        (a host sync on a GPU): call it when logging, not every step."""
        learning = self.engine.learning
        if learning is None:
            return 0.0
        return 1.0 - int(learning.sum()) / max(learning.numel(), 1)

    def before_step(self, *args, **kwargs):
        """Optimizer step pre-hook: the engine decides the frozen entries and zeroes their gradients."""
        self.engine.before_step(self)

    def after_step(self, optimizer=None, *args, **kwargs):
        """Optimizer step post-hook: the engine restores the frozen entries; then the pruned entries' optimizer
        state is held (`settle_optimizer_state`), and an engine that could not go on hands over to its successor."""
        engine = self.engine
        engine.after_step(self)
        if engine.replacement is not None:
            self.engine = engine.replacement
        if optimizer is not None and self.settle_optimizer_state:
            self._held_state.settle(optimizer, self.params, self.mask)

    def attach(self, optimizer):
        """Hook `optimizer` so that every step respects the masks and the freeze rule. Returns the hook handles."""
        handles = [optimizer.register_step_pre_hook(self.before_step),
                   optimizer.register_step_post_hook(self.after_step)]
        self._handles.extend(handles)
        return handles

    def detach(self):
        """Remove the optimizer hooks and release the step engine's buffers (rebuilt at the next step)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.engine.release()

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
            'granularity': self.granularity,
            'keep_masks': self.mask.state_dict(),
            'rewind_state': None if self.rewind_state is None else OrderedDict(
                (k, v.detach().cpu().clone()) for k, v in self.rewind_state.items()),
            'thresholds': dict(self.last_thresholds),
        }

    def load_state_dict(self, state):
        for key in ('method', 'scope', 'granularity'):
            if state.get(key, 'element' if key == 'granularity' else None) != getattr(self, key):
                raise ValueError(f'Pruning state was saved with {key}={state[key]!r} but this run uses '
                                 f'{getattr(self, key)!r}; resume with the same pruning options.')
        if list(state['keep_masks']) != list(self.params):
            raise ValueError('Pruning state was saved for other target parameters; resume with the same targets.')
        self.mask.load_state_dict(state['keep_masks'])
        self.follow_params()
        device = next(iter(self.params.values())).device
        self.rewind_state = None if state['rewind_state'] is None else OrderedDict(
            (k, v.to(device)) for k, v in state['rewind_state'].items())
        self.last_thresholds = dict(state.get('thresholds') or {})


def prune_model(model, sparsity, targets=None, scope='global', method='dupru', eps=1e-6, step='eager',
                granularity='element'):
    """Prune a trained `model` (any nn.Module) in one call: the smallest-|W| `sparsity` share of its targets (over
    all of them with `scope='global'`, or of every tensor with 'layer') is set to exactly 0.0. Returns the Pruner;
    `pruner.attach(optimizer)` then fine-tunes with the freezing rule of `method` (pruned weights stay exactly 0).

    `targets`: a preset of the model's class (body, whole: pruning.presets, e.g. MSRResNet), parameter name patterns,
    or None: the class's `whole` preset where there is one, else every convolution and linear weight."""
    if targets is None:
        from dupru_basicsr.pruning.presets import WHOLE_TARGET_PRESETS
        targets = 'whole' if type(model).__name__ in WHOLE_TARGET_PRESETS else layer_weights(model)
    pruner = Pruner(model, targets, method=method, eps=eps, scope=scope, step=step, granularity=granularity)
    pruner.snapshot()
    pruner.prune(sparsity=sparsity)
    return pruner
