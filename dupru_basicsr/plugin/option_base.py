"""What every option check shares: the error and warning types, and the small tests of values they use.

Every error is an `OptionError` that names the option key (or the file) and says how to fix it.
"""
import difflib


class OptionError(ValueError):
    """A wrong or inconsistent option; the message names the key and the fix."""


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


def did_you_mean(name, known):
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f' Did you mean "{close[0]}"?' if close else ''


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


def parse_force_value(entry, value):
    """A `--force_yml` value, read as YAML (a number, a string, true/false, a list such as [a, b]) plus BasicSR's
    own spellings (`~` or `none` for None, `!!float<number>`); never evaluated as Python, as BasicSR's
    `_postprocess_yml_value` does with lists."""
    import yaml
    text = value.strip()
    if text == '~' or text.lower() == 'none':
        return None
    if text.startswith('!!float'):
        try:
            return float(text[len('!!float'):])
        except ValueError:
            number = text[len('!!float'):]
            raise OptionError(f'--force_yml {entry}: {number!r} after !!float is not a number.') from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, 'problem', None) or 'not valid YAML'
        raise OptionError(f'--force_yml {entry}: the value {text!r} does not parse ({problem}); write a number, a '
                          'string, true/false, or a list such as [body.*.weight, conv_hr.weight].') from None
