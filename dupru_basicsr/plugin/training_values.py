"""The option values BasicSR and torch would reject (or misuse) only once training runs: the seed, the optimizer,
the EMA, the losses and the LR scheduler. Checked before anything is written; each OptionError names the key, the
value and what would fix it (a NaN learning rate would otherwise train to the end and save NaN weights)."""
import math

from dupru_basicsr.plugin.option_base import OptionError, as_int, text_hint

# numpy's seed range: BasicSR's set_random_seed seeds random, numpy and torch with it
MAX_SEED = 2**32 - 1


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(key, value, minimum=None, maximum=None, above=None, below=None, example=None):
    """`value` is a finite int or float within the given bounds (`minimum`/`maximum` inclusive, `above`/`below`
    exclusive); else an OptionError naming `key`."""
    bounds = [f'>= {minimum}' if minimum is not None else None, f'> {above}' if above is not None else None,
              f'<= {maximum}' if maximum is not None else None, f'< {below}' if below is not None else None]
    wanted = ' and '.join(b for b in bounds if b) or 'finite'
    fix = f' (e.g. {example})' if example is not None else ''
    if not _is_number(value):
        raise OptionError(f'{key} is {value!r}; it must be a number {wanted}{fix}.{text_hint(value)}')
    if not math.isfinite(value):
        raise OptionError(f'{key} is {value!r}; it must be a finite number {wanted}{fix}.')
    if ((minimum is not None and value < minimum) or (above is not None and value <= above)
            or (maximum is not None and value > maximum) or (below is not None and value >= below)):
        raise OptionError(f'{key} is {value!r}; it must be {wanted}{fix}.')


def check_seed(opt):
    """`manual_seed`: unset (BasicSR draws one) or an integer 0 ... 2**32 - 1 (numpy's range)."""
    seed = opt.get('manual_seed')
    if seed is not None and (as_int(seed) is None or not 0 <= seed <= MAX_SEED):
        raise OptionError(f'manual_seed is {seed!r}; give an integer from 0 to {MAX_SEED} (e.g. manual_seed: 0), or '
                          'remove the key for a random seed.')


def _check_optimizer(key, optim):
    if not isinstance(optim, dict):
        raise OptionError(f'{key} is {optim!r}; give a mapping with type and lr (e.g. type: Adam, lr: !!float 2e-4).')
    check_number(f'{key}.lr', optim.get('lr'), above=0, example='!!float 2e-4')
    for name in ('weight_decay', 'momentum'):
        if name in optim:
            check_number(f'{key}.{name}', optim[name], minimum=0, example=0)
    if 'eps' in optim:
        check_number(f'{key}.eps', optim['eps'], above=0, example='1.0e-8')
    if 'betas' in optim:
        betas = optim['betas']
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise OptionError(f'{key}.betas is {betas!r}; give two numbers in [0, 1) (e.g. [0.9, 0.99]).')
        for i, beta in enumerate(betas):
            check_number(f'{key}.betas[{i}]', beta, minimum=0, below=1, example='[0.9, 0.99]')


def _check_scheduler(key, sched):
    if 'gamma' in sched:
        check_number(f'{key}.gamma', sched['gamma'], above=0, example=0.5)
    if 'eta_min' in sched:
        check_number(f'{key}.eta_min', sched['eta_min'], minimum=0, example='!!float 1e-7')
    if 'milestones' in sched:
        milestones = sched['milestones']
        if not isinstance(milestones, (list, tuple)) or not all(as_int(m) is not None and m >= 0 for m in milestones):
            raise OptionError(f'{key}.milestones is {milestones!r}; give a list of iteration numbers (e.g. [250000, '
                              '500000]).')
    for name in ('restart_weights', 'restarts'):
        for i, value in enumerate(sched.get(name) or []):
            if name == 'restarts':
                if as_int(value) is None or value < 0:
                    raise OptionError(f'{key}.restarts[{i}] is {value!r}; give iteration numbers >= 0.')
            else:
                check_number(f'{key}.{name}[{i}]', value, minimum=0, example=1)


def check_training_values(opt):
    """The train: section's numbers (optimizer, EMA, losses, scheduler, warm-up) and the seed; see the module doc."""
    check_seed(opt)
    train = opt.get('train') or {}
    for name in ('optim_g', 'optim_d'):
        if name in train:
            _check_optimizer(f'train.{name}', train[name])
    if train.get('ema_decay') is not None:
        check_number('train.ema_decay', train['ema_decay'], minimum=0, below=1, example=0.999)
    for name, loss in train.items():
        if name.endswith('_opt') and isinstance(loss, dict) and 'loss_weight' in loss:
            check_number(f'train.{name}.loss_weight', loss['loss_weight'], minimum=0, example=1.0)
    if isinstance(train.get('scheduler'), dict):
        _check_scheduler('train.scheduler', train['scheduler'])
    if train.get('warmup_iter') is not None and as_int(train['warmup_iter']) is None:
        raise OptionError(f'train.warmup_iter is {train["warmup_iter"]!r}; give a number of iterations (-1: none).')
