"""Threshold scopes (the `pruning.scope` option): which surviving weights to remove at a round boundary (paper eq. 1-2).

Each round removes exactly round(p % of the survivors) with the smallest |W| (or, for gradual pruning, exactly as
many as bring the pruned fraction to a target sparsity), either per tensor (`layer`, the paper's λ per layer) or
over all targets at once (`global`). The p-th percentile is found with `kthvalue` (linear
time, any size: torch.quantile refuses more than 16M elements) and ties at the threshold are broken by position, so
the count is exact and the result deterministic on every device and every DDP rank.
"""
import math
import torch
from collections import OrderedDict

from dupru_basicsr.pruning.mask import Mask


def num_to_remove(num_alive, rate):
    """round(rate % of num_alive), halves rounded up (deterministic, unlike Python's banker's round)."""
    return int(math.floor(num_alive * float(rate) / 100.0 + 0.5))


def _remove_smallest(scores, alive, k):
    """New flat keep-mask: `alive` minus its k entries of smallest score (ties: lowest index first).

    Returns (keep, threshold) where threshold is the largest removed score (None when k == 0).
    """
    if k <= 0:
        return alive.clone(), None
    masked = torch.where(alive, scores, torch.full_like(scores, float('inf')))
    if masked.is_cuda and torch.are_deterministic_algorithms_enabled():
        threshold = masked.sort().values[k - 1]  # CUDA's kthvalue has no deterministic kernel: it would raise
    else:
        threshold = masked.kthvalue(k).values  # stays on the device: no host copy of the weights
    below = alive & (masked < threshold)
    at = alive & (masked == threshold)
    need = k - below.sum()
    # among the entries equal to the threshold, remove the first `need` in index order
    at_removed = at & (torch.cumsum(at.to(torch.int64), 0) <= need)
    return alive & ~(below | at_removed), threshold


def num_to_remove_for(num_alive, numel, rate=None, sparsity=None):
    """How many survivors to remove: `rate` % of them (rounds), or enough to reach `sparsity` (fraction of numel
    pruned, rounded half up; gradual pruning). Never negative: masks only tighten."""
    if (rate is None) == (sparsity is None):
        raise ValueError('Give exactly one of rate (percent of survivors) or sparsity (target fraction pruned).')
    if rate is not None:
        return num_to_remove(num_alive, rate)
    target_pruned = int(math.floor(numel * float(sparsity) + 0.5))
    return max(0, target_pruned - (numel - num_alive))


def prune_layerwise(weights, mask, rate=None, sparsity=None):
    """Per-tensor thresholds. `weights`: {name: tensor}; returns (new Mask, {name: threshold or None})."""
    new, thresholds = OrderedDict(), OrderedDict()
    for name, w in weights.items():
        alive = mask[name].reshape(-1)
        k = num_to_remove_for(int(alive.sum()), alive.numel(), rate, sparsity)
        keep, thr = _remove_smallest(w.detach().abs().reshape(-1), alive, k)
        new[name] = keep.reshape(w.shape)
        thresholds[name] = None if thr is None else float(thr)
    return Mask(new), thresholds


def prune_global(weights, mask, rate=None, sparsity=None):
    """One threshold over all tensors together; returns (new Mask, {'global': threshold or None})."""
    names = list(weights)
    scores = torch.cat([weights[n].detach().abs().reshape(-1) for n in names])
    alive = torch.cat([mask[n].reshape(-1) for n in names])
    k = num_to_remove_for(int(alive.sum()), alive.numel(), rate, sparsity)
    keep, thr = _remove_smallest(scores, alive, k)
    new, offset = OrderedDict(), 0
    for n in names:
        numel = weights[n].numel()
        new[n] = keep[offset:offset + numel].reshape(weights[n].shape)
        offset += numel
    return Mask(new), {'global': None if thr is None else float(thr)}


SCOPES = {'layer': prune_layerwise, 'global': prune_global}
