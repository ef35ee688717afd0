"""Named points of a training run where a caller can look in (or stop the process): a no-op unless someone listens.

The product calls `hooks(point, **info)` at:
- `after_lr` (iter, model, opt): right after the learning-rate update of an iteration (at a round's first iteration,
  after its prune, rewind and masks file);
- `after_step` (iter, model, opt): after the optimizer step, before validation and saving;
- `round_end` (iter, model, opt): at the last iteration of a round, after the finite-weights check, before the
  round-end validation and save;
- `before_rename` (path): inside `weights.io.atomic_save`, with the data written to the temporary file but not yet
  renamed over `path`.

Listeners are added with `hooks.add(fn)` (`fn(point, **info)`) and removed with `hooks.remove(fn)`. The test suite
uses them to kill, pause or inspect runs at exact places (tests/helpers/launch.py); nothing in the package listens.
"""


class Hooks:

    def __init__(self):
        self._listeners = []

    def add(self, listener):
        self._listeners.append(listener)
        return listener

    def remove(self, listener):
        self._listeners.remove(listener)

    def __call__(self, point, **info):
        for listener in list(self._listeners):
            listener(point, **info)


hooks = Hooks()
