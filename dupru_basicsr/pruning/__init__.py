"""Pure-PyTorch pruning core (no BasicSR import): works for any nn.Module."""
from dupru_basicsr.pruning.freeze import FREEZE_RULES
from dupru_basicsr.pruning.mask import Mask
from dupru_basicsr.pruning.pruner import Pruner, prune_model
from dupru_basicsr.pruning.schedules import GradualSchedule, RoundSchedule, rate_for_sparsity
from dupru_basicsr.pruning.scopes import SCOPES, num_to_remove, prune_global, prune_layerwise
from dupru_basicsr.pruning.targets import DEFAULT_TARGETS, select_targets

__all__ = [
    'DEFAULT_TARGETS', 'FREEZE_RULES', 'GradualSchedule', 'Mask', 'Pruner', 'RoundSchedule', 'SCOPES',
    'num_to_remove', 'prune_global', 'prune_layerwise', 'prune_model', 'rate_for_sparsity', 'select_targets'
]
