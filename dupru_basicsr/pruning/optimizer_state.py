"""Holding the optimizer state of pruned entries at cheap fixed values (`Pruner.settle_optimizer_state`).

Pruned entries get a zero gradient and are 0.0 after every step, so their optimizer state only costs time: torch's
CPU sqrt of exact zeros (Adam's second moment of an entry that never had a gradient) is several times slower than
of other numbers (bench/README.md, the freezing step at the memory-traffic floor), and moments that decay without
gradients become subnormal, which is slow everywhere. So first moments and momentum are held at 0.0, second
moments at 1.0.
"""
import torch

STATE_HELD_AT = {'exp_avg': 0.0, 'momentum_buffer': 0.0, 'exp_avg_sq': 1.0, 'max_exp_avg_sq': 1.0}
SETTLE_EVERY = 500  # steps between two settlings (1.0 * 0.99 ** 500 = 0.0066: far from subnormal)


class PrunedStateHolder:
    """Sets the optimizer state of the pruned entries to STATE_HELD_AT (Adam's, AdamW's and SGD's moments; other
    state is left alone): once when the optimizer's state is new (first step, a fresh optimizer at a round start, a
    resume) or the masks changed (a prune), then every SETTLE_EVERY steps.

    It never changes a weight: pruned entries get a zero gradient and are 0.0 after every step, whatever their
    state; and it never touches the state of a kept entry (the optimizers update entry by entry). Only pruned entries
    are held because nothing but new masks makes them learn again (a rewind can unfreeze an entry that DUPru's
    |W| < eps rule froze, so frozen entries keep the optimizer's own state)."""

    def __init__(self):
        self._settled = (None, None, 0)  # (the settled state tensor of the first target, the masks, steps since)

    def settle(self, optimizer, params, mask):
        """After an optimizer step: `params` {name: target parameter}, `mask` their keep-masks (a Mask)."""
        state = optimizer.state.get(next(iter(params.values())))
        if not state:
            return
        first = next((state[k] for k in STATE_HELD_AT if k in state), None)
        settled, mask_version, steps = self._settled
        version = (mask, mask.version)
        if first is settled and mask_version == version and steps < SETTLE_EVERY:
            self._settled = (settled, mask_version, steps + 1)
            return
        self._settled = (first, version, 1)
        for name, p in params.items():
            pruned = None
            for key, value in STATE_HELD_AT.items():
                held = optimizer.state.get(p, {}).get(key)
                if isinstance(held, torch.Tensor) and held.shape == p.shape:
                    pruned = ~mask[name] if pruned is None else pruned
                    held.masked_fill_(pruned, value)
