"""Register DUPruModel in a BasicSR checkout: `dupru-register PATH_TO_CHECKOUT [--fix-torchvision] [--remove]`
(or `python -m dupru_basicsr.register ...`).

It writes `basicsr/models/dupru_model.py`, a file that only imports `dupru_basicsr` (BasicSR's model scan imports
every `*_model.py` of that folder, and importing `dupru_basicsr` registers DUPruModel), and copies this package's
DUPruModel option files into `options/train/DUPru/`. The checkout's own `python basicsr/train.py -opt
options/train/DUPru/<file>.yml` then trains with DUPruModel. `--remove` deletes what registration wrote (option
files that were edited since are kept, and named).

A BasicSR 1.4.2 checkout does not import on torchvision >= 0.17: `basicsr/data/degradations.py` imports
`rgb_to_grayscale` from `torchvision.transforms.functional_tensor`, which is gone, and it is imported before the
model scan, so the import of `dupru_basicsr` (whose shim fixes this for the pip-installed BasicSR) comes too late.
Registration detects it and, with `--fix-torchvision`, applies BasicSR's own one-line fix (master, PR #650: import
it from `torchvision.transforms.functional`); without the flag it prints that line and changes nothing there.
"""
import argparse
import filecmp
import glob
import importlib.util
import os
import os.path as osp
import shutil
import sys

from dupru_basicsr import __version__

MARKER = '# Written by dupru-register'
MODEL_FILE = osp.join('basicsr', 'models', 'dupru_model.py')
OPTIONS_DIR = osp.join('options', 'train', 'DUPru')
DEGRADATIONS = osp.join('basicsr', 'data', 'degradations.py')
OLD_IMPORT = 'from torchvision.transforms.functional_tensor import rgb_to_grayscale'
NEW_IMPORT = 'from torchvision.transforms.functional import rgb_to_grayscale'
MODEL_SOURCE = f'''{MARKER} (dupru-basicsr {{version}}); undo with `dupru-register --remove PATH_TO_CHECKOUT`.
# BasicSR's model scan (basicsr/models/__init__.py) imports every *_model.py of this folder; importing dupru_basicsr
# registers DUPruModel in MODEL_REGISTRY (and applies dupru-basicsr's compatibility shims).
import dupru_basicsr  # noqa: F401
'''


class RegisterError(ValueError):
    """The path is not a BasicSR checkout, or a file there is not ours to overwrite or remove."""


def shipped_option_files():
    """The DUPruModel training option files of this package (its `options/train` folder, when installed from a
    clone with `pip install -e .`)."""
    import yaml
    root = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'options', 'train')
    files = []
    for path in sorted(glob.glob(osp.join(root, '**', '*.yml'), recursive=True)):
        with open(path) as f:
            if (yaml.safe_load(f) or {}).get('model_type') == 'DUPruModel':
                files.append(path)
    return files


def check_checkout(path):
    for rel in (osp.join('basicsr', 'models', '__init__.py'), osp.join('basicsr', 'train.py')):
        if not osp.isfile(osp.join(path, rel)):
            raise RegisterError(f'{path} is not a BasicSR checkout: {rel} is missing. Pass the folder that holds '
                                'basicsr/ and options/ (e.g. a `git clone https://github.com/XPixelGroup/BasicSR`).')


def torchvision_needs_fix(path):
    """True when the checkout's degradations.py imports the module that this torchvision no longer has."""
    degradations = osp.join(path, DEGRADATIONS)
    if not osp.isfile(degradations):
        return False
    with open(degradations) as f:
        lines = [line.strip() for line in f]
    return OLD_IMPORT in lines and not torchvision_has_functional_tensor()


def torchvision_has_functional_tensor():
    """Whether this torchvision ships `transforms/functional_tensor.py` (< 0.17). Looks at the files, since
    `dupru_basicsr`'s shim may have put the private successor module in sys.modules under that name."""
    spec = importlib.util.find_spec('torchvision.transforms')
    return spec is not None and any(osp.isfile(osp.join(folder, 'functional_tensor.py'))
                                    for folder in spec.submodule_search_locations or [])


def _is_ours(model_file):
    with open(model_file) as f:
        return f.read().startswith(MARKER)


def _top_missing_folder(folder):
    """The outermost folder of `folder`'s path that does not exist (`os.makedirs` creates it and those under it)."""
    top = None
    while folder and not osp.isdir(folder):
        top, parent = folder, osp.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return top


def _is_as_before(path, data):
    """Whether `path` holds `data` again (for data None: whether it is gone)."""
    if data is None:
        return not osp.lexists(path)
    try:
        with open(path, 'rb') as f:
            return f.read() == data
    except OSError:
        return False


def _put_back(before, opened, made_dirs):
    """Undo `write_all_or_nothing`'s writes: the files it opened get their earlier content back (or are removed when
    it created them), the folders it made are removed. Returns what is still changed afterwards, one phrase each."""
    problems = {}
    for path in opened:
        try:
            if before[path] is None:
                os.remove(path)
            else:
                with open(path, 'wb') as f:
                    f.write(before[path])
        except OSError as e:
            problems[path] = e.strerror or str(e)
    for folder in reversed(made_dirs):
        shutil.rmtree(folder, ignore_errors=True)
    left = []
    for path in opened:
        if not _is_as_before(path, before[path]):
            what = 'written by dupru-register, not removed' if before[path] is None else 'earlier content not restored'
            left.append(f'{path} ({what}' + (f': {problems[path]})' if path in problems else ')'))
    left += [f'{folder} (a folder made by dupru-register, not removed)' for folder in made_dirs if osp.lexists(folder)]
    return left


def write_all_or_nothing(planned):
    """Write {path: bytes}; when any write fails, put every file back as it was (created folders and files removed)
    and raise RegisterError naming the file. When putting back fails too, the error names what was left changed."""
    before, opened, made_dirs = {}, [], []
    try:
        for path, data in planned.items():
            folder = osp.dirname(path)
            if not osp.isdir(folder):
                top = _top_missing_folder(folder)
                try:
                    os.makedirs(folder)
                finally:  # also the folders it made before it failed
                    if top is not None and osp.isdir(top):
                        made_dirs.append(top)
            if osp.isfile(path):
                with open(path, 'rb') as f:
                    before[path] = f.read()
            else:
                before[path] = None
            with open(path, 'wb') as f:
                opened.append(path)  # from here on the file differs from before
                f.write(data)
    except OSError as e:
        failure = f'cannot write {e.filename or path} ({e.strerror or e})'
        left = _put_back(before, opened, made_dirs)
        if left:
            raise RegisterError(f'{failure}, and putting the checkout back as it was failed too; left changed: '
                                f'{"; ".join(left)}. Restore or remove these by hand, make the checkout writable and '
                                'try again.') from None
        raise RegisterError(f'{failure}; nothing was changed. Make the checkout writable (or run as its owner) and '
                            'try again.') from None


def register(path, fix=False, force=False, out=print):
    """Write the import-only model file and the option files; returns the paths written."""
    check_checkout(path)
    model_file = osp.join(path, MODEL_FILE)
    if osp.exists(model_file) and not _is_ours(model_file):
        raise RegisterError(f'{model_file} exists and was not written by dupru-register; move it away first.')
    options = shipped_option_files()
    target_dir = osp.join(path, OPTIONS_DIR)
    edited = [osp.join(target_dir, osp.basename(p)) for p in options
              if osp.isfile(osp.join(target_dir, osp.basename(p)))
              and not filecmp.cmp(p, osp.join(target_dir, osp.basename(p)), shallow=False)]
    if edited and not force:
        raise RegisterError(f'{", ".join(edited)} differ from the shipped option files (edited?); pass --force to '
                            'overwrite them, or move them away.')
    # every file is written or none: the contents are planned first, then written, and restored on any failure
    planned = {model_file: MODEL_SOURCE.format(version=__version__).encode()}
    for src in options:
        with open(src, 'rb') as f:
            planned[osp.join(target_dir, osp.basename(src))] = f.read()
    degradations = osp.join(path, DEGRADATIONS)
    needs_fix = torchvision_needs_fix(path)
    if needs_fix and fix:
        with open(degradations) as f:
            planned[degradations] = f.read().replace(OLD_IMPORT, NEW_IMPORT, 1).encode()
    write_all_or_nothing(planned)
    written = list(planned)
    out(f'Wrote {model_file} (imports dupru_basicsr, which registers DUPruModel).')
    if options:
        out(f'Copied {len(options)} option files into {target_dir}: '
            + ', '.join(osp.basename(p) for p in options) + '.')
    else:
        out('No option files to copy (this installation has no options/train folder; install dupru-basicsr from a '
            'clone with `pip install -e .`). Write your own with model_type: DUPruModel and a pruning: section.')
    if needs_fix:
        if fix:
            out(f'Fixed {degradations} for torchvision >= 0.17 (BasicSR master\'s fix, PR #650): "{OLD_IMPORT}" -> '
                f'"{NEW_IMPORT}".')
        else:
            out(f'warning: this checkout does not import on this torchvision: {degradations} has "{OLD_IMPORT}", '
                'a module torchvision >= 0.17 removed, and it is imported before the model scan, so the training '
                f'script fails before DUPruModel is registered. Change that line to "{NEW_IMPORT}" (BasicSR master\'s '
                'fix, PR #650), or run dupru-register again with --fix-torchvision to do it.')
    out(f'Train from {path}: PYTHONPATH=. python basicsr/train.py -opt {OPTIONS_DIR}/<file>.yml [--auto_resume] '
        '(resuming with it needs CUDA; on a CPU resume with dupru-train, see the plugin docs).')
    return written


def unregister(path, out=print):
    """Delete the model file and the unchanged option copies; returns the paths removed."""
    check_checkout(path)
    removed = []
    model_file = osp.join(path, MODEL_FILE)
    if osp.exists(model_file):
        if not _is_ours(model_file):
            raise RegisterError(f'{model_file} was not written by dupru-register; not removing it.')
        os.remove(model_file)
        removed.append(model_file)
    target_dir = osp.join(path, OPTIONS_DIR)
    kept = []
    for src in shipped_option_files():
        dst = osp.join(target_dir, osp.basename(src))
        if not osp.isfile(dst):
            continue
        if filecmp.cmp(src, dst, shallow=False):
            os.remove(dst)
            removed.append(dst)
        else:
            kept.append(dst)
    if osp.isdir(target_dir) and not os.listdir(target_dir):
        os.rmdir(target_dir)
    out(f'Removed {len(removed)} file(s): ' + (', '.join(removed) or 'none') + '.')
    if osp.isdir(target_dir):
        out(f'Kept {target_dir}: it holds files that are not unchanged copies of ours'
            + (f' ({", ".join(osp.basename(p) for p in kept)} were edited)' if kept else '') + '.')
    degradations = osp.join(path, DEGRADATIONS)
    if osp.isfile(degradations) and NEW_IMPORT in open(degradations).read():
        out(f'{degradations} keeps its torchvision fix (BasicSR\'s own, needed on torchvision >= 0.17).')
    return removed


def main(argv=None):
    """Console script `dupru-register`; user errors print one `error:` line and exit with status 2."""
    parser = argparse.ArgumentParser(prog='dupru-register', description=__doc__.split('\n\n')[0])
    parser.add_argument('checkout', help='the BasicSR checkout (the folder that holds basicsr/ and options/)')
    parser.add_argument('--fix-torchvision', action='store_true',
                        help='apply BasicSR master\'s one-line fix of basicsr/data/degradations.py when this '
                        'torchvision needs it')
    parser.add_argument('--force', action='store_true', help='overwrite edited copies of the option files')
    parser.add_argument('--remove', action='store_true', help='undo the registration')
    args = parser.parse_args(argv)
    try:
        if args.remove:
            unregister(args.checkout)
        else:
            register(args.checkout, fix=args.fix_torchvision, force=args.force)
    except (RegisterError, OSError) as e:
        print(f'dupru-register: error: {e}', file=sys.stderr)
        sys.exit(2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
