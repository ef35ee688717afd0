"""One process per experiment folder: an advisory lock on a file beside the folder.

`experiments/<name>` is locked through `experiments/.<name>.lock` (beside the folder, not in it: BasicSR archives
the folder by renaming it, and a refused start must leave the folder byte-identical). The lock is `fcntl.flock`, so
the operating system releases it when the holder exits in any way, SIGKILL included: the stale file of a killed run
never blocks a resume. The holder writes its pid, host and start time into the file, so that a refused start can
name the running process. A holder that finishes normally removes the file while it still holds the lock.
`lock_experiment` takes the lock for a training run (on rank 0, for every rank of a DDP run).

Advisory locks protect against other `dupru-train` processes only, and `flock` may not be enforced across machines
on some network file systems (NFS before Linux 2.6.12, some FUSE mounts).
"""
import datetime
import fcntl
import json
import os
import os.path as osp
import socket
import sys

from dupru_basicsr.errors import LockError

_HELD_FDS = set()  # lock descriptors of this process; a forked child (a DataLoader worker) closes its copies


def _close_in_child():
    # A forked child shares the lock with its parent; if it kept the descriptor, a DataLoader worker outliving a
    # SIGKILLed trainer would keep the experiment locked. Closing the child's copy leaves the parent's lock held.
    for fd in list(_HELD_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_FDS.clear()


os.register_at_fork(after_in_child=_close_in_child)


def lock_path(folder):
    """`<parent>/.<name>.lock` for `folder` = `<parent>/<name>`."""
    folder = osp.abspath(folder)
    return osp.join(osp.dirname(folder), f'.{osp.basename(folder)}.lock')


def describe_holder(path):
    """'process <pid> on <host> (started <time>, <command>)' from a lock file, or a plain phrase when unreadable."""
    try:
        with open(path) as f:
            info = json.load(f)
        return (f'process {info["pid"]} on host {info["host"]} (started {info["started"]}: '
                f'{info.get("command", "?")})')
    except (OSError, ValueError, KeyError, TypeError):
        return 'another process (it has not written its details yet)'


class FolderLock:
    """An exclusive, non-blocking lock of one folder (see the module docstring). Use `acquire()` / `release()` or
    `with FolderLock(folder):`."""

    def __init__(self, folder):
        self.folder = osp.abspath(folder)
        self.path = lock_path(folder)
        self._fd = None
        self._made_parent = False

    def acquire(self):
        """Take the lock or raise LockError naming the process that holds it."""
        if self._fd is not None:
            return self
        parent = osp.dirname(self.path)
        self._made_parent = not osp.isdir(parent)  # removed again on release if nothing else was put there
        while True:
            try:
                os.makedirs(parent, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:  # a folder in the lock file's place, a read-only parent, ...
                raise LockError(f'cannot lock {self.folder}: its lock file {self.path} cannot be opened '
                                f'({e.strerror or e}); remove what is in its place, or run where the parent folder '
                                'is writable.') from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockError(f'{self.folder} is in use by {describe_holder(self.path)}. One process per experiment '
                                'folder: wait for that run to finish (or stop it), then resume with --auto_resume, '
                                'or give this run another name.') from None
            except BaseException:
                os.close(fd)
                raise
            # The previous holder may have removed the file between our open and our lock: then we hold a lock on
            # a file nobody else can find, so try again with the file now at `path`.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {'pid': os.getpid(), 'host': socket.gethostname(),
                'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                'command': ' '.join([osp.basename(sys.argv[0])] + sys.argv[1:])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + '\n').encode(), 0)
        self._fd = fd
        _HELD_FDS.add(fd)
        return self

    def release(self):
        """Remove the lock file and drop the lock (removed first, while still held, so that no other process can
        lock the file in between and then lose it)."""
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        _HELD_FDS.discard(self._fd)
        os.close(self._fd)
        self._fd = None
        if self._made_parent:  # a refused start leaves no empty experiments/ behind
            try:
                os.rmdir(osp.dirname(self.path))
            except OSError:
                pass  # not empty: the run made its folder there

    @property
    def held(self):
        return self._fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def lock_experiment(opt):
    """Lock `experiments/<name>` for this training run; returns the lock (None on ranks > 0).

    Rank 0 takes the lock and tells the other ranks whether it got it, so that a refused DDP start stops every
    rank with the same message instead of leaving them waiting for rank 0."""
    lock, error = None, None
    if opt['rank'] == 0:
        try:
            lock = FolderLock(opt['path']['experiments_root']).acquire()
        except LockError as e:
            error = str(e)
    if opt['dist'] and opt['world_size'] > 1:
        import torch.distributed as dist
        shared = [error]
        dist.broadcast_object_list(shared, src=0)
        error = shared[0]
    if error is not None:
        raise LockError(error)
    return lock
