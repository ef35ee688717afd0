"""The rules `dupru-train`'s loop (`dupru_basicsr.train`) applies at each epoch and iteration, beyond BasicSR's:

- exact resume: every epoch draws its random numbers from a seed derived from (manual_seed, rank, epoch)
  (`epoch_seed`);
- which of validation and saving an iteration needs, round ends included (`iteration_end`);
- a non-finite loss or non-finite weights stop the run naming the iteration and round (`check_finite_loss`,
  `check_finite_weights`).

What a run sets up around the loop lives elsewhere: the experiment lock in `plugin.lock` (`lock_experiment`), the log
file in `plugin.run_log`, the command-line checks in `dupru_basicsr.utils.cli`.
"""
import math

from dupru_basicsr.plugin.run_log import open_log_file  # noqa: F401  (moved to run_log; tests import it from here)


def epoch_seed(opt, epoch):
    # Distinct per rank and per epoch, and independent of how many iterations ran before (resume-exact).
    return int(opt['manual_seed']) + int(opt['rank']) + 100003 * (epoch + 1)


def iteration_end(model, opt, it):
    """(round_end, validate, save) for iteration `it`: BasicSR validates at multiples of val.val_freq and saves at
    multiples of logger.save_checkpoint_freq; a model with rounds (`model.is_round_end(it)`, DUPruModel) is also
    validated and saved at every round end, so every round's ticket is kept and a resume never crosses a round
    boundary twice."""
    round_end = bool(getattr(model, 'is_round_end', lambda it: False)(it))
    validate = opt.get('val') is not None and it % opt['val']['val_freq'] == 0
    save = it % opt['logger']['save_checkpoint_freq'] == 0 or round_end
    return round_end, validate, save


def _where(model, it):
    """' (round r/T)' for models with pruning rounds, else ''."""
    rounds = getattr(model, 'rounds', None)
    return f' (round {rounds.round_of(it) + 1}/{rounds.num_rounds})' if rounds is not None else ''


def _last_good(last_saved):
    if last_saved is None:
        return 'No checkpoint was saved yet.'
    return (f'The last checkpoint (iteration {last_saved}: models/net_g_{last_saved}.pth, '
            f'training_states/{last_saved}.state) is intact; lower the learning rate or check the data, then resume '
            'with --auto_resume.')


def check_finite_loss(model, it, last_saved):
    """Raise FloatingPointError when a logged loss of this iteration is NaN or infinite."""
    bad = {k: v for k, v in (getattr(model, 'log_dict', None) or {}).items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f'Non-finite loss {bad} at iteration {it}{_where(model, it)}; stopping before '
                                 f'anything is saved. {_last_good(last_saved)}')


def check_finite_weights(model, it, last_saved, logger=None):
    """Raise FloatingPointError (logged to `logger` first) when a network of the model holds a NaN or infinite
    value. Costs one host sync; the loop calls it only before validating or saving."""
    import torch
    for attr in sorted(vars(model)):
        net = getattr(model, attr)
        if not (attr.startswith('net_') and isinstance(net, torch.nn.Module)):
            continue
        tensors = [(k, v) for k, v in model.get_bare_model(net).state_dict().items() if v.is_floating_point()]
        if not tensors or bool(torch.stack([torch.isfinite(v).all() for _, v in tensors]).all()):
            continue
        name = next(k for k, v in tensors if not bool(torch.isfinite(v).all()))
        message = (f'Non-finite weights in {attr}.{name} at iteration {it}{_where(model, it)}; stopping without '
                   f'validating or saving them. {_last_good(last_saved)}')
        if logger is not None:
            logger.error(message)
        raise FloatingPointError(message)
