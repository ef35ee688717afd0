"""Pure-PyTorch pruning core (no BasicSR import): works for any nn.Module."""
from dupru_basicsr.pruning.freeze import FREEZE_RULES
from dupru_basicsr.pruning.mask import Mask
from dupru_basicsr.pruning.pruner import Pruner
from dupru_basicsr.pruning.rounds import GradualSchedule, RoundSchedule
from dupru_basicsr.pruning.strategy import STRATEGIES, num_to_remove, prune_global, prune_layerwise
from dupru_basicsr.pruning.targets import select_targets

__all__ = [
    'FREEZE_RULES', 'GradualSchedule', 'Mask', 'Pruner', 'RoundSchedule', 'STRATEGIES', 'num_to_remove',
    'prune_global', 'prune_layerwise', 'select_targets'
]
