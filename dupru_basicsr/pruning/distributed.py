"""Pruning under torch.distributed: every rank must hold the same masks (`check_masks_agree`, called by
`Pruner.prune`)."""
import torch


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
