"""What every option check shares: the error and warning types, and the small tests of values they use.

Every error is an `OptionError` that names the option key (or the file) and says how to fix it.
"""
from dupru_basicsr.errors import OptionError, did_you_mean  # noqa: F401  (defined there, for utils too)
from dupru_basicsr.utils.cli import parse_force_value  # noqa: F401  (the --force_yml reader; plugin.shims uses it)


class OptionWarning(UserWarning):
    """An option that is allowed but probably not meant (training starts); the message names the key and why."""


def as_int(value):
    """`value` as an int when it is a whole number (YAML may give 1e6 as a float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def text_hint(value):
    """Why a number came out as text: PyYAML (YAML 1.1) reads `1e-5` as a string (it needs a dot, `1.0e-5`), and
    BasicSR's `--force_yml` turns only plain decimals into numbers (`!!float1e-5` for the rest)."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ''
        return (f' {value!r} was read as text: in the option file write it with a dot and a signed exponent '
                f'(e.g. 1.0e-5), with --force_yml as !!float{value}.')
    return ''


def is_pruning_model(model_type):
    """True when `model_type` names a registered BasicSR model that reads the `pruning:` section (its class says so
    with `reads_pruning_section = True`, as DUPruModel and its subclasses do)."""
    from basicsr.utils.registry import MODEL_REGISTRY
    return model_type in MODEL_REGISTRY and getattr(MODEL_REGISTRY.get(model_type), 'reads_pruning_section', False)


def build_network(opt):
    """network_g built as BasicSR builds it (without its logging), or an OptionError naming the bad argument."""
    # Not basicsr's build_network: it logs, and BasicSR's root logger must not be touched before the log file
    # handler is set up (it would never get one).
    # fork_rng: a check must not draw from the run's random stream, or DUPruModel (which checks its options when it
    # is built) would start from another W0 than SRModel with the same manual_seed.
    import torch
    from basicsr.utils.registry import ARCH_REGISTRY
    net_opt = dict(opt['network_g'])
    arch = net_opt.pop('type')
    try:
        with torch.random.fork_rng(devices=[]):
            return ARCH_REGISTRY.get(arch)(**net_opt)
    except TypeError as e:
        raise OptionError(f'network_g: {arch} cannot be built from these options ({e}); fix the network_g keys.') \
            from None
