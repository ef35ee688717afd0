"""Test-side launcher of `dupru_basicsr.train`: installs listeners on `dupru_basicsr.hooks` that kill, pause or
inspect the run at exact places, then runs the training command line as `python -m dupru_basicsr.train` would.

    python tests/helpers/launch.py [--kill-at WHERE:WHAT] [--pause-at WHERE:ITER] [--dump-dir DIR] -- -opt x.yml ...
    torchrun --nproc_per_node 2 tests/helpers/launch.py --dump-dir DIR -- -opt x.yml --launcher pytorch

- `--kill-at after_lr:<iter>` / `after_step:<iter>` SIGKILLs the process at that point of that iteration;
  `save:<file name>` inside the atomic save of that file (written, not renamed);
- `--pause-at after_step:<iter>` prints `paused at after_step:<iter>` and sleeps (holding the experiment lock) until
  the process is killed;
- `--dump-dir DIR`: at every round end each rank writes `rank<r>_iter<it>.pth` there with its masks, thresholds,
  frozen set and weights (`install_dump`, also used in-process).
"""
import argparse
import os
import os.path as osp
import signal
import sys
import time


def _point(spec):
    where, _, what = spec.partition(':')
    return where, what


def install_kill(spec):
    """SIGKILL this process at `<where>:<what>` (what: an iteration, or for `save` a file name)."""
    from dupru_basicsr.hooks import hooks
    where, what = _point(spec)

    def kill(point, **info):
        here = (point, str(info.get('iter'))) if where != 'save' else (
            'save' if point == 'before_rename' else point, osp.basename(str(info.get('path'))))
        if here == (where, what):
            os.kill(os.getpid(), signal.SIGKILL)

    return hooks.add(kill)


def install_pause(spec):
    """Print `paused at <where>:<iter>` and sleep until killed at that point."""
    from dupru_basicsr.hooks import hooks
    where, what = _point(spec)

    def pause(point, **info):
        if (point, str(info.get('iter'))) == (where, what):
            print(f'paused at {where}:{what}', flush=True)
            while True:
                time.sleep(60)

    return hooks.add(pause)


def install_dump(folder):
    """At every round end write this rank's pruning state to `folder/rank<r>_iter<it>.pth`; returns the listener."""
    from dupru_basicsr.hooks import hooks
    from dupru_basicsr.weights.io import atomic_save

    def dump(point, iter=None, model=None, opt=None, **info):
        pruner = getattr(model, 'pruner', None)
        if point != 'round_end' or pruner is None:
            return
        atomic_save({
            'iter': iter,
            'round': model.rounds.round_of(iter) + 1,
            'keep_masks': pruner.mask.state_dict(),
            'thresholds': dict(pruner.last_thresholds),
            'frozen': {k: v.cpu() for k, v in pruner.frozen_masks().items()},
            'params': {k: v.detach().cpu().clone() for k, v in model.get_bare_model(model.net_g).state_dict().items()},
        }, osp.join(folder, f'rank{opt["rank"]}_iter{iter}.pth'))

    return hooks.add(dump)


def main(argv):
    parser = argparse.ArgumentParser(prog='launch.py')
    parser.add_argument('--kill-at')
    parser.add_argument('--pause-at')
    parser.add_argument('--dump-dir')
    parser.add_argument('train_args', nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ['--'] else args.train_args
    if args.kill_at:
        install_kill(args.kill_at)
    if args.pause_at:
        install_pause(args.pause_at)
    if args.dump_dir:
        install_dump(args.dump_dir)
    from dupru_basicsr.train import main as train_main
    sys.argv = [sys.argv[0]] + train_args
    return train_main()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
