"""Old import path, kept only for the modules that branch r2 is moving (compare); the code lives in
`dupru_basicsr.plugin.shims` and `dupru_basicsr.plugin.resume`. Delete once nothing imports it."""
from dupru_basicsr.plugin.resume import load_training_state  # noqa: F401
