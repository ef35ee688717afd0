"""Old import path, kept only for the modules that branch r2 is moving (compare, bench); the checks live in
`dupru_basicsr.plugin.options`, `.pruning_options` and `.datasets`. Delete once nothing imports it."""
from dupru_basicsr.plugin.datasets import check_datasets as _check_datasets  # noqa: F401
from dupru_basicsr.plugin.pruning_options import PruningConfig  # noqa: F401
