"""What the console scripts share: a user error is one line `<prog>: error: <message>` on stderr and exit status 2
(no traceback), and the BasicSR command line (`-opt FILE`, `--launcher`) is checked before BasicSR reads it."""
import argparse
import os
import os.path as osp
import re
import sys

from dupru_basicsr.errors import LockError, OptionError, ResumeError, did_you_mean


def user_error_types():
    """The exceptions that mean "the input is wrong" in every command (each command adds its own)."""
    return OptionError, ResumeError, LockError


def run_command(prog, body, errors=(), interrupted='completed checkpoints are kept'):
    """Call `body()`; return its exit status (0 for None). A user error (`user_error_types()` or `errors`) prints
    `<prog>: error: <message>` on stderr and returns 2; Ctrl-C prints `<prog>: interrupted; <interrupted>` and returns
    130 (no traceback)."""
    try:
        status = body()
    except (*user_error_types(), *errors) as e:
        print(f'{prog}: error: {e}', file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f'\n{prog}: interrupted; {interrupted}.', file=sys.stderr, flush=True)
        return 130
    return 0 if status is None else status


def _required_mapping(opt, key, path, what):
    if not isinstance(opt.get(key), dict):
        raise OptionError(f'{path}: {key} is {"missing" if key not in opt else repr(opt[key])}; it must be a mapping '
                          f'({what}).')


def plain_name_problem(name):
    """Why `name` cannot name a folder inside another one (experiments/<name>, results/<name>/<dataset>), or None."""
    if not isinstance(name, str) or not name.strip():
        return 'it is empty'
    if name in ('.', '..') or any(c in name for c in '/\\\0') or osp.isabs(name):
        return 'it would leave its folder (it holds / or \\, or is . or ..)'
    return None


def check_folder_names(opt, where):
    """`name` (experiments/<name>, results/<name>) and every dataset's `name` (visualization/<name>) are plain folder
    names; `where` is the option file (or '--force_yml') for the message."""
    problem = plain_name_problem(opt.get('name'))
    if problem:
        raise OptionError(f'{where}: name is {opt.get("name")!r}; it names the experiment folder (experiments/<name>, '
                          f'results/<name>) and {problem}: give a non-empty name without / or \\.')
    for phase, dataset in (opt.get('datasets') or {}).items():
        if isinstance(dataset, dict) and 'name' in dataset:
            problem = plain_name_problem(dataset['name'])
            if problem:
                raise OptionError(f'{where}: datasets.{phase}.name is {dataset["name"]!r}; it names the folder of '
                                  f'its images (visualization/<name>) and {problem}: give a plain name.')


FORCE_KEY = re.compile(r'[A-Za-z0-9_.-]+')


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


def apply_force_yml(opt, entries):
    """Apply `--force_yml key:subkey=value` entries to the option dict `opt` (read with yaml.safe_load), as BasicSR
    will: the sections must exist, the keys are plain words (BasicSR pastes them into Python code), a new key that
    looks like a typo of an existing one is refused. Returns `opt`."""
    for entry in entries or []:
        keys, _, value = entry.partition('=')
        path = [k.strip() for k in keys.split(':')]
        usage = (f'--force_yml {entry}: give key:subkey=value for a section that exists in the option file (e.g. '
                 'train:ema_decay=0.999)')
        if entry.count('=') != 1 or not keys.strip():
            raise OptionError(usage + '.')
        bad = next((k for k in path if not FORCE_KEY.fullmatch(k)), None)
        if bad is not None:
            raise OptionError(f'{usage}; the key {bad!r} may hold only letters, digits, _, . and -.')
        node = opt
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise OptionError(usage + '.')
        leaf = path[-1]
        if leaf not in node:
            hint = did_you_mean(leaf, [str(k) for k in node])
            if hint:
                raise OptionError(f'--force_yml {entry}: {":".join(path)} is not in the option file.{hint} (A new '
                                  'key is accepted only when it is not a near-spelling of an existing one.)')
        node[leaf] = parse_force_value(entry, value)
    return opt


def check_option_file(path):
    """Read a BasicSR option file safely and check what BasicSR's `parse_options` needs before it can even parse it
    (it would raise KeyError / TypeError otherwise). Returns the dict. Raises OptionError.

    Read with `yaml.safe_load`: BasicSR reads option files with PyYAML's full loader, which builds arbitrary Python
    objects from `!!python/...` tags; a file with such tags is refused here before BasicSR sees it.
    """
    import yaml

    if not osp.isfile(path):
        what = 'is a folder' if osp.isdir(path) else 'does not exist'
        raise OptionError(f'-opt {path} {what}; give the path of a BasicSR option YAML file (e.g. '
                          'options/train/tiny/train_MSRResNet_x4_tiny_DUPru.yml).')
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except yaml.constructor.ConstructorError as e:
        raise OptionError(f'-opt {path} uses the YAML tag {e.problem.split("tag ")[-1].strip(chr(39))}, which builds '
                          'Python objects; an option file holds plain values only (numbers, strings, lists, '
                          'mappings).') from None
    except yaml.YAMLError as e:
        detail = ' '.join(str(e).split())
        raise OptionError(f'-opt {path} is not valid YAML ({detail}); fix the file.') from None
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError(f'-opt {path} cannot be read ({e}).') from None
    if not isinstance(opt, dict):
        raise OptionError(f'-opt {path} holds {type(opt).__name__}, not a mapping of BasicSR options.')
    check_folder_names(opt, path)
    if 'num_gpu' not in opt:
        raise OptionError(f'{path}: num_gpu is missing; set num_gpu: 0 (CPU), a number of GPUs or auto.')
    _required_mapping(opt, 'datasets', path, 'datasets.train, datasets.val, ... each with its options')
    bad = next((k for k, v in opt['datasets'].items() if not isinstance(v, dict)), None)
    if bad is not None:
        raise OptionError(f'{path}: datasets.{bad} is {opt["datasets"][bad]!r}; each dataset must be a mapping of '
                          'its options (type, dataroot_gt, dataroot_lq, ...).')
    _required_mapping(opt, 'path', path, 'e.g. pretrain_network_g, strict_load_g, resume_state; it may be empty: {}')
    return opt


def asks_for_cpu(argv):
    """True when the option file of `argv` (-opt) says num_gpu: 0 (read before BasicSR initialises DDP)."""
    import yaml
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    known, _ = parser.parse_known_args(argv)
    try:
        with open(known.opt) as f:
            return (yaml.safe_load(f) or {}).get('num_gpu') == 0
    except (OSError, TypeError, yaml.YAMLError, AttributeError):
        return False  # parse_options reports the problem


def check_basicsr_command_line(argv, module='dupru_basicsr.train'):
    """Check the parts of a BasicSR command line (`-opt`, `--launcher`, `--force_yml`) that BasicSR would turn into a
    traceback. Usage errors (missing -opt, unknown flags) are left to BasicSR's own argparse parser. `module` is the
    entry point the launcher hints name."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    parser.add_argument('--launcher', default='none')
    parser.add_argument('--force_yml', nargs='+')
    known, _ = parser.parse_known_args(argv)
    if known.opt is None:
        return
    opt = check_option_file(known.opt)
    env = {'pytorch': ('RANK', f'torchrun --nproc_per_node <N> -m {module} -opt ... --launcher pytorch'),
           'slurm': ('SLURM_PROCID', f'srun python -m {module} -opt ... --launcher slurm')}
    if known.launcher in env and env[known.launcher][0] not in os.environ:
        variable, how = env[known.launcher]
        raise OptionError(f'--launcher {known.launcher} needs the environment its launcher sets ({variable} is not '
                          f'set); start the run with `{how}`, or leave out --launcher for one process.')
    if known.force_yml:
        # the names that become folders are checked again with the forced values, before anything is written
        check_folder_names(apply_force_yml(opt, known.force_yml), '--force_yml')
