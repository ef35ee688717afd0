"""Old import path, kept only for the modules that branch r2 is moving (export); the checkpoint I/O lives in
`dupru_basicsr.weights.io`. Delete once nothing imports it."""
from dupru_basicsr.weights.io import atomic_save  # noqa: F401
