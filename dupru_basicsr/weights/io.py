"""Checkpoint files on disk: atomic writes, and the one CRC-checked, `weights_only` load used everywhere."""
import glob
import os
import os.path as osp
import re
import tempfile
import torch
import zipfile

from dupru_basicsr.hooks import hooks


def atomic_save(obj, path):
    """`torch.save` to a temporary file in the same folder, fsync, then rename over `path`.

    A reader (or a resumed run after a kill) sees either the old complete file or the new complete file, never a
    half-written one. Temporary files are named `.<name>.<random>.tmp`; `remove_stale_temp_files` cleans up those
    a killed run left behind.
    """
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(data, path):
    """`data` (bytes) written to `path` as `atomic_save` writes a checkpoint (an encoded image, a report)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write(path, write):
    """`write(f)` into a temporary file (binary) in `path`'s folder, fsync, chmod to what a plain write would give,
    then rename over `path` and fsync the folder."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        # mkstemp makes the file 0600; the renamed file must have the mode a plain write gives (0666 minus the
        # umask: group-readable in a lab's shared experiments folder)
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            hooks('before_rename', path=path)  # tests kill here: the data written but not renamed
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def current_umask():
    """The process's umask (read by setting it and setting it back: there is no getter)."""
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def remove_stale_temp_files(*folders):
    """Delete the `.*.tmp` files a killed `atomic_save` left in `folders`; returns their paths."""
    removed = []
    for folder in folders:
        for path in glob.glob(osp.join(glob.escape(folder), '.*.tmp')):
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def verify_crc(path):
    """Check the CRC-32 of every record of a (zip-format) torch file; `torch.load` does not, so damage inside the
    tensor data would otherwise load silently. Files that are not zip archives are left to `torch.load`."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return  # legacy (non-zip) format or truncated: torch.load accepts or rejects it
    if bad is not None:
        raise RuntimeError(f'record {bad} fails its CRC check')


def load_checkpoint(path, map_location='cpu'):
    """`torch.load(path, weights_only=True)` after a CRC check, with a message naming the file when it is
    truncated or corrupt."""
    try:
        verify_crc(path)
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated zip, bad CRC, bad pickle, unsafe global...
        raise RuntimeError(f'{path} cannot be loaded ({type(e).__name__}: {load_failure(e)}); it is truncated, '
                           'corrupt or not a checkpoint written by this package.') from e


def odd_state_entry(state):
    """The first key of the mapping `state` whose entry is not a parameter name with a tensor (None when all are):
    what a network checkpoint's `params` must hold before anything loads it."""
    return next((k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)), None)


def non_finite_entry(state):
    """`name: N NaN, M infinite of K values` for the first floating tensor of the mapping `state` that holds a NaN or
    an infinity (a run that diverged saves such weights), else None."""
    for name, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                nans, infinite = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
                return f'{name}: {nans} NaN, {infinite} infinite of {value.numel()} values'
    return None


def state_problem(state):
    """What keeps the entry `state` of a network checkpoint from being loaded as weights, in words ("is a Tensor,
    not a state dict", "is empty", "has the entry 1: Tensor, ...", "holds non-finite weights (...)"), or None."""
    if not isinstance(state, dict):
        return 'is missing' if state is None else f'is a {type(state).__name__}, not a state dict of names and tensors'
    if not state:
        return 'is empty'
    odd = odd_state_entry(state)
    if odd is not None:
        return f'has the entry {odd!r}: {type(state[odd]).__name__}, not a name and a tensor'
    bad = non_finite_entry(state)
    if bad is not None:
        return (f'holds non-finite weights ({bad}): the run that saved it diverged; use an earlier checkpoint (e.g. '
                'the best one of an earlier round)')
    return None


def strip_module_prefix(state):
    """`state` with DataParallel's `module.` prefix removed from its keys, as BasicSR's `load_network` does."""
    return {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}


def load_failure(error):
    """The reason in a torch.load error, without torch's advice to load with weights_only=False (which would run
    whatever code the file carries)."""
    text = ' '.join(str(error).split())
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1].strip()
        text = re.split(r'\.? (Please use|Check the documentation|Please file an issue)', text)[0]
        return 'it holds what a weights-only load refuses: ' + text.rstrip('. ')[:200]
    return text[:300]
