"""Output locks: two vdtrain processes writing into one output folder would each silently undo the other's work.

A lock is a small JSON file (`.vdtrain.lock` in a folder, `.NAME.lock` beside a file) holding the host, pid and
command of its owner, created with `O_EXCL` so exactly one process gets it. A lock whose process is gone (same
host, pid not running) is stale: it is taken over with a warning. A lock held by a live process, or by another
host (whose processes cannot be checked from here), is refused by name, with how to clear it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from vdtrain.errors import OutputLockedError

logger = logging.getLogger(__name__)
LOCK_NAME = ".vdtrain.lock"


def lock_path(target: str | os.PathLike, is_file: bool = False) -> Path:
    """The lock file of an output folder (`DIR/.vdtrain.lock`) or, `is_file`, of an output file (`DIR/.NAME.lock`)."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock") if is_file else target / LOCK_NAME


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written by a process killed while taking it


def acquire(target: str | os.PathLike, command: str, is_file: bool = False) -> Path:
    """Take the lock of `target` for `command`; returns the lock file.

    Raises:
        OutputLockedError: a live process (or one on another host) holds it.
    """
    path = lock_path(target, is_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "command": command, "started": time.time()}
    for _ in range(3):
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if owner is None:
                continue  # released meanwhile
            host, pid = owner.get("host"), owner.get("pid")
            stale = not owner or (host == me["host"] and isinstance(pid, int) and not _alive(pid))
            if not stale:
                since = time.strftime("%Y-%m-%d %H:%M", time.localtime(owner.get("started", 0)))
                where = "this host" if host == me["host"] else f"host {host}"
                raise OutputLockedError(
                    f"{target} is in use by `{owner.get('command', 'vdtrain')}` (pid {pid} on {where}, since "
                    f"{since}); wait for it to finish or choose another output. If that process is gone, delete "
                    f"{path}"
                ) from None
            logger.warning("vdtrain: taking over the stale lock %s (pid %s on %s is gone)", path, pid, host)
            path.unlink(missing_ok=True)
            continue
        try:
            os.write(handle, json.dumps(me).encode())
        except OSError:
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(handle)
        return path
    raise OutputLockedError(f"{path}: could not take the lock (another process keeps taking it)")


def release(path: Path) -> None:
    """Remove a lock file this process holds (one another process took over is left alone)."""
    owner = _owner(path)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def output_lock(
    target: str | os.PathLike, command: str, *, is_file: bool = False, enabled: bool = True
) -> Iterator[Path | None]:
    """Hold the lock of the output folder (or, `is_file`, output file) `target` while the block runs.

    `enabled=False` takes no lock (every process of a launch but the main one, which holds it for all). Where the
    lock cannot be written (a full, read-only or foreign folder) the block runs unlocked: its own first write fails
    and names the path.
    """
    path = None
    folder = lock_path(target, is_file).parent
    created = not folder.exists()  # made for the lock alone: removed again if nothing else was written there
    if enabled:
        try:
            path = acquire(target, command, is_file)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
                raise
    try:
        yield path
    finally:
        if path is not None:
            release(path)
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty


def main_process() -> bool:
    """Whether this is the main process of a launch (torchrun/accelerate set RANK), which takes the lock."""
    return int(os.environ.get("RANK", "0")) == 0
