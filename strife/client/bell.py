"""A doorbell for a file that several processes write: whoever waits for another process's write
(the client node for a payment a CLI queued, a CLI for the node's answer) listens on a Unix
datagram socket of its own in a directory beside the file, and every writer rings each one after
it commits.

Why not poll: the client node looked at its outbox every 20 ms, 22 ms of CPU a second per idle
client, the largest part of an idle deployment's CPU. Why not inotify: not in the standard
library, and Linux-only. A ring carries no data, so nothing can be forged through it; a lost or
spurious ring costs one look, and waiters still look on their own at least once a second.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from pathlib import Path

_ids = itertools.count()


class Bell:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sock: socket.socket | None = None
        self._path: Path | None = None
        self._prefix = f"{os.getpid()}-"

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def listen(self) -> bool:
        """Start receiving rings (until close); False where a socket cannot be made here (a path
        longer than a socket address holds, say): the caller then polls as before."""
        if self._sock is not None:
            return True
        path = self.directory / f"{self._prefix}{next(_ids)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a socket left by a killed process that had this pid
            sock.bind(str(path))
            sock.setblocking(False)
        except OSError:
            sock.close()
            return False
        self._sock, self._path = sock, path
        return True

    async def wait(self, timeout: float) -> bool:
        """Whether a ring came within `timeout` seconds (every ring waiting is taken at once)."""
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_recv(self._sock, 1), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            return False
        with contextlib.suppress(BlockingIOError):
            while True:
                self._sock.recv(1)
        return True

    def ring(self) -> None:
        """Wake every other process listening (never this one's own sockets); a socket whose
        process died is removed."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for name in names:
                if name.startswith(self._prefix):
                    continue
                path = os.path.join(self.directory, name)
                try:
                    sender.sendto(b"\0", path)
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        os.unlink(path)  # nobody listens there any more
                except OSError:
                    pass  # a full queue already holds a ring; anything else: the waiter looks anyway

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(OSError):
                assert self._path is not None
                self._path.unlink()
            self._sock = self._path = None
