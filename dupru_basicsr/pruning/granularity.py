"""Pruning granularity (`Pruner(granularity=...)`, option `pruning.granularity`): which weights are removed together.

- `element` (the default, the paper's): every weight on its own.
- `oc_block<N>` (e.g. `oc_block4`): N consecutive output channels at the same (input channel, kh, kw) of a
  convolution (or input feature of a linear layer) are kept or removed together. This is the pattern sparse CPU
  kernels run fast: MNN's sparse convolution multiplies blocks of 4 output channels at once (12 accumulators instead
  of 3 for single weights), so a 1x4 ticket is what makes a sparse model faster on a CPU.

A block's score is the L2 norm of its N weights: removing a block sets N outputs' contributions to zero, and under
uncorrelated inputs the squared output error this adds is proportional to the sum of their squares, so the blocks
with the smallest L2 norm cost the least. (An L1 norm ranks blocks with one large weight lower than blocks of
medium ones; the squared error says the large weight matters more.) The thresholds (per layer or global) and the
exact counts are those of the element scopes applied to the blocks: `rate` removes that percent of the surviving
blocks, `sparsity` reaches that share of blocks, which is the same share of weights (every block holds N).
"""
import re
from collections import OrderedDict

from dupru_basicsr.pruning.mask import Mask

GRANULARITIES = ('element', 'oc_block<N>')
_BLOCK_RE = re.compile(r'^oc_block([1-9][0-9]*)$')


def block_size(granularity):
    """N of `oc_block<N>`, 1 for `element`; ValueError for anything else."""
    if granularity == 'element':
        return 1
    m = _BLOCK_RE.match(str(granularity))
    if not m:
        raise ValueError(f'Unknown pruning granularity "{granularity}"; use element or oc_block<N> (e.g. oc_block4: '
                         '4 output channels at the same input position kept or removed together).')
    return int(m.group(1))


def check_blockable(params, n):
    """ValueError naming every target whose output channels are not a multiple of `n` (or that has no output-
    channel axis to block)."""
    if n == 1:
        return
    bad = [f'{name} ({tuple(p.shape)})' for name, p in params.items() if p.dim() < 2 or p.shape[0] % n]
    if bad:
        raise ValueError(f'granularity oc_block{n} needs targets whose output channels (first dimension) are a '
                         f'multiple of {n}; these are not: {", ".join(bad)}. Leave them out of the targets or use a '
                         'block size that divides them.')


def _blocks(t, n):
    """`t` (out, ...) viewed as (out / n, n, rest): one row of n entries per block."""
    return t.reshape(t.shape[0] // n, n, -1)


def block_scores(weights, n):
    """{name: (out / n, rest) L2 norms of the blocks} of the weights."""
    return OrderedDict((name, _blocks(w.detach(), n).float().norm(dim=1)) for name, w in weights.items())


def block_mask(mask, n):
    """The Mask over blocks of an element Mask whose blocks are whole (a block is kept when its first entry is)."""
    return Mask(OrderedDict((name, _blocks(m, n)[:, 0]) for name, m in mask.items()))


def expand_block_mask(blocks, shapes, n):
    """The element Mask of a block Mask: every entry of a block takes the block's value."""
    return Mask(OrderedDict((name, b.unsqueeze(1).expand(b.shape[0], n, b.shape[1]).reshape(shapes[name]))
                            for name, b in blocks.items()))


def prune_blocks(scope, weights, mask, n, rate=None, sparsity=None):
    """The threshold `scope` (layer, global or a custom one) applied to blocks of `n` output channels: returns
    (new element Mask, thresholds on the blocks' L2 norms)."""
    new_blocks, thresholds = scope(block_scores(weights, n), block_mask(mask, n), rate, sparsity)
    return expand_block_mask(new_blocks, {name: w.shape for name, w in weights.items()}, n), thresholds
