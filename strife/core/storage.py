"""When a write fails because of the disk (full, read-only, failing), say so in a few words, and
tell whoever watches this process's health (a node's runtime: strife/nodes/health.py).

Databases and outboxes report their failed writes here (strife/nodes/group_commit.py,
strife/client/outbox.py); what is not a disk problem (a constraint, a busy database) is ignored.
"""
import errno
import shutil
import sqlite3
from pathlib import Path

FULL = "disk full"
_ERRNOS = {errno.ENOSPC: FULL, errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
           errno.EIO: "disk I/O error"}
_SQLITE = {sqlite3.SQLITE_FULL: FULL, sqlite3.SQLITE_IOERR: "disk I/O error",
           sqlite3.SQLITE_READONLY: "cannot write (read-only)", sqlite3.SQLITE_CANTOPEN: "cannot open the file"}

_listeners = []


def problem(exc, path=None):
    """'disk full' (or another few words) when `exc` means the disk cannot take a write, else None.
    `path`: a file on that disk, to tell a full disk behind a vaguer error (an I/O error, a file
    SQLite cannot open)."""
    why = None
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        why = _SQLITE.get(code & 0xFF) if code is not None else None
        if why is None and "disk is full" in str(exc):
            why = FULL
    elif isinstance(exc, OSError):
        why = _ERRNOS.get(exc.errno or 0)
        path = path or exc.filename
    if why is not None and why != FULL and path is not None and is_full(path):
        why = FULL
    return why


def plainly(why):
    """'the disk is full', or 'the disk cannot be written (disk I/O error)'."""
    return "the disk is full" if why == FULL else f"the disk cannot be written ({why})"


def is_full(path):
    """No byte left on the file system that holds `path` (or its nearest existing parent)."""
    for candidate in (Path(path), *Path(path).parents):
        try:
            return shutil.disk_usage(candidate).free == 0
        except OSError:
            continue
    return False


def watch(listener):
    """listener(path, why) is called, from any thread, for every write that failed for the disk."""
    _listeners.append(listener)


def report(path, exc):
    """A write to `path` failed with `exc`: the disk problem (passed to the listeners), or None."""
    why = problem(exc, path)
    if why is not None:
        for listener in list(_listeners):
            listener(path, why)
    return why
