"""One training run per workdir: `<workdir>/lock` names its holder (host, pid).

A second run on the same workdir would interleave `metrics.jsonl` and overwrite the first
run's checkpoints, so it refuses to start. A lock left by a process that died on this host
(kill -9, power loss) is taken over with a warning; one held from another host cannot be
checked from here and is reported with the command that removes it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from srgan_jax.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = "lock"


class WorkdirBusyError(UserError):
    """Another live run holds the workdir."""


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds `<workdir>/lock` (the workdir must exist) until the block ends."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir).absolute() / LOCK_FILE
        self._held = False

    def __enter__(self) -> WorkdirLock:
        holder = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):  # a second try after taking over a stale lock
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as err:  # read-only file system, no permission
                raise UserError(f"cannot write to --workdir {self.path.parent} ({err.strerror}): "
                                "choose a writable folder") from None
            with os.fdopen(fd, "w") as file:
                json.dump(holder, file)
            self._held = True
            return self
        raise WorkdirBusyError(f"{self.path.parent} is locked by another run that started at the same moment: "
                               "use another --workdir")

    def _take_over_if_stale(self) -> None:
        """Remove the lock if its holder is a dead process of this host; WorkdirBusyError otherwise."""
        try:
            holder = json.loads(self.path.read_text())
            host, pid = holder["host"], int(holder["pid"])
        except FileNotFoundError:
            return  # released meanwhile
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            # Unreadable: being written right now by a run starting at the same moment, or
            # half-written by a process killed while taking it (then it is old).
            if time.time() - _mtime(self.path) < 10:
                raise WorkdirBusyError(f"{self.path.parent} is being locked by another run starting now: "
                                       "use another --workdir") from None
            host, pid = None, None
        # Our own pid in the lock: a restarted container that got the pid of the killed run.
        if host is not None and (host != socket.gethostname() or (pid != os.getpid() and _is_alive(pid))):
            where = "this host" if host == socket.gethostname() else f"host {host}"
            raise WorkdirBusyError(f"{self.path.parent} is in use by another training run (pid {pid} on {where}): "
                                   f"wait for it or stop it, or use another --workdir; if that run is gone, "
                                   f"delete {self.path}")
        log.warning("taking over the lock of a run that is gone (%s)", self.path.read_text(errors="replace")
                    if self.path.exists() else "no holder recorded")
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        if self._held:
            try:
                if json.loads(self.path.read_text()).get("pid") == os.getpid():  # still ours
                    self.path.unlink()
            except (OSError, ValueError):
                pass  # already gone or replaced: nothing of ours to release
            self._held = False


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # released meanwhile: as good as new
        return time.time()
