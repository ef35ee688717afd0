"""Mask: the keep-mask of every pruned tensor (True = weight survives)."""
import torch
from collections import OrderedDict

from dupru_basicsr.weights.io import atomic_save, load_checkpoint


class Mask:
    """An ordered dict name -> bool tensor (True = kept), with sparsity statistics and save/load.

    The mask tensors are replaced (a new Mask, or load_state_dict), never edited in place: the counts and the
    pruner's flat copies of the masks are cached on that assumption.
    """

    def __init__(self, keep_masks):
        self._num_kept = None  # cached: masks are only replaced through load_state_dict
        self.version = 0  # bumped by load_state_dict: whoever caches views of the masks (Pruner) rebuilds them
        self._masks = OrderedDict()
        for name, m in keep_masks.items():
            if m.dtype != torch.bool:
                raise TypeError(f'Mask "{name}" must be a bool tensor, got {m.dtype}.')
            self._masks[name] = m

    @classmethod
    def ones_like(cls, tensors):
        return cls(OrderedDict((n, torch.ones_like(t, dtype=torch.bool)) for n, t in tensors.items()))

    def __getitem__(self, name):
        return self._masks[name]

    def __iter__(self):
        return iter(self._masks)

    def __len__(self):
        return len(self._masks)

    def items(self):
        return self._masks.items()

    def num_kept(self):
        """Surviving entries in all masks (an int)."""
        if self._num_kept is None:
            self._num_kept = int(sum(int(m.sum()) for m in self._masks.values()))
        return self._num_kept

    def numel(self):
        return sum(m.numel() for m in self._masks.values())

    def sparsity(self):
        """Fraction of masked-out (pruned) entries over all tensors."""
        return 1.0 - self.num_kept() / max(self.numel(), 1)

    def layer_sparsity(self):
        return OrderedDict((n, 1.0 - int(m.sum()) / m.numel()) for n, m in self._masks.items())

    def state_dict(self):
        return OrderedDict((n, m.detach().cpu().clone()) for n, m in self._masks.items())

    def load_state_dict(self, state):
        if list(state) != list(self._masks):
            raise KeyError(f'Mask names differ: saved {list(state)[:4]}..., expected {list(self._masks)[:4]}...')
        for n, m in state.items():
            if m.shape != self._masks[n].shape or m.dtype != torch.bool:
                raise ValueError(f'Mask "{n}": saved {m.dtype}{tuple(m.shape)}, expected bool'
                                 f'{tuple(self._masks[n].shape)}.')
            self._masks[n] = m.to(self._masks[n].device)
        self._num_kept = None
        self.version += 1

    def equal(self, other):
        return list(self) == list(other) and all(torch.equal(self[n], other[n].to(self[n].device)) for n in self)

    def save(self, path):
        atomic_save({'keep_masks': self.state_dict()}, path)

    @classmethod
    def load(cls, path, device='cpu'):
        """The masks of a mask file, on `device` (e.g. that of the model's parameters; a Pruner given these masks
        moves them to its targets' device anyway)."""
        data = load_checkpoint(path, map_location=device)
        if not isinstance(data, dict) or 'keep_masks' not in data:
            raise ValueError(f'{path} is not a mask file (no "keep_masks" entry).')
        return cls(data['keep_masks'])
