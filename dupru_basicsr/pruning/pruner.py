"""Pruner: masks, rewinding and per-step freezing for the target parameters of any nn.Module."""
import torch
from collections import OrderedDict

from dupru_basicsr.pruning.freeze import FREEZE_RULES
from dupru_basicsr.pruning.mask import Mask
from dupru_basicsr.pruning.strategy import STRATEGIES
from dupru_basicsr.pruning.targets import select_targets

REWIND_MODES = ('init', 'iter', 'none', 'lr', 'reinit')


class Pruner:
    """Prunes the parameters of `model` matched by `targets` and keeps them pruned/frozen while training.

    - `prune(rate)`: new keep-masks from the current |W| of the survivors (layer or global scope), applied at once.
    - `snapshot()`: records the rewind point (all parameters and buffers, e.g. W0 before training).
    - `rewind(mode)`: init/iter -> rewind point ⊙ mask, none -> current weights ⊙ mask, reinit -> a fresh state ⊙ mask.
    - `attach(optimizer)`: optimizer hooks; before each step the frozen set is decided from the current weights
      (freeze rule of `method`, plus every pruned entry) and its gradients are zeroed; after the step frozen entries
      get back their exact previous value and pruned entries are exactly 0.0, whatever the optimizer does.
    """

    def __init__(self, model, targets=('body.*.weight', ), method='dupru', eps=1e-6, scope='layer', lookup=None):
        # method / scope: a name, or a callable (a custom freeze rule `(weight, keep_mask, eps) -> bool tensor`, or a
        # threshold strategy `(weights, mask, rate=None, sparsity=None) -> (Mask, thresholds)`). Names resolve with
        # `lookup(name, kind)` (kind 'freeze' or 'scope'; e.g. dupru_basicsr.registry.lookup), else the built-ins.
        self.freeze_rule = self._resolve(method, FREEZE_RULES, 'freeze', lookup)
        self.strategy = self._resolve(scope, STRATEGIES, 'scope', lookup)
        self.model = model
        self.targets = list(targets)
        self.params = select_targets(model, self.targets)
        self.method = method if isinstance(method, str) else method.__name__
        self.scope = scope if isinstance(scope, str) else scope.__name__
        self.eps = float(eps)
        self.mask = Mask.ones_like(self.params)
        self.rewind_state = None
        self.last_thresholds = {}
        self._frozen_count = 0
        self._step_cache = None
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
            self.mask, self.last_thresholds = self.strategy(self.params, self.mask, rate, sparsity)
            self.apply_mask()
        return self.last_thresholds

    def apply_mask(self, module=None):
        """Zero the pruned entries of `module` (default: the pruned model; pass e.g. an EMA copy of it)."""
        params = self.params if module is None else select_targets(module, self.targets)
        with torch.no_grad():
            for name, p in params.items():
                p.masked_fill_(~self.mask[name], 0.0)

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
        return OrderedDict((n, self.freeze_rule(p.detach(), self.mask[n], self.eps) | ~self.mask[n])
                           for n, p in self.params.items())

    def frozen_fraction(self):
        """Fraction of target entries frozen at the last optimizer step (pruned ones included)."""
        return self._frozen_count / max(self.mask.numel(), 1)

    def before_step(self, *args, **kwargs):
        # Frozen = the rule's entries plus the pruned ones. Their gradients are zeroed (paper eq. 4), and after the
        # step they get back the values saved here, which makes them bit-identical (pruned ones exactly 0.0: prune,
        # rewind and resume apply the mask) whatever momentum or weight decay do.
        with torch.no_grad():
            params = list(self.params.values())
            frozen = list(self.frozen_masks().values())
            for p, f in zip(params, frozen):
                if p.grad is not None:
                    p.grad.masked_fill_(f, 0.0)
            # One buffer for all saved values: a tensor-sized allocation per target per step costs more than the
            # copy itself on a CPU (fresh pages every time), and the copy needs no host sync on CUDA.
            flat = torch.empty(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
            saved = [v.view_as(p) for v, p in zip(flat.split([p.numel() for p in params]), params)]
            torch._foreach_copy_(saved, [p.detach() for p in params])
        self._step_cache = (frozen, saved)

    def after_step(self, *args, **kwargs):
        (frozen, saved), self._step_cache = self._step_cache, None
        with torch.no_grad():
            for p, f, old in zip(self.params.values(), frozen, saved):
                torch.where(f, old, p.detach(), out=p.detach())
            self._frozen_count = int(sum(f.sum() for f in frozen))

    def attach(self, optimizer):
        """Hook `optimizer` so that every step respects the masks and the freeze rule. Returns the hook handles."""
        handles = [optimizer.register_step_pre_hook(self.before_step),
                   optimizer.register_step_post_hook(self.after_step)]
        self._handles.extend(handles)
        return handles

    def detach(self):
        for h in self._handles:
            h.remove()
        self._handles = []

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
        device = next(iter(self.params.values())).device
        self.rewind_state = None if state['rewind_state'] is None else OrderedDict(
            (k, v.to(device)) for k, v in state['rewind_state'].items())
        self.last_thresholds = dict(state.get('thresholds') or {})
