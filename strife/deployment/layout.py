"""Where a deployment keeps its runtime files, below the directory of its topology file.

All of it is its owner's alone: directories 0700, files 0600 (every entry point sets umask 077;
`create` also takes group and other access away from what older deployments left readable).
"""
import contextlib
import os
import pathlib
import stat


class Layout:
    def __init__(self, home):
        self.home = pathlib.Path(home).resolve()
        self.certs = self.home / "certs"
        self.state = self.home / "state"
        self.logs = self.home / "logs"
        # the topology as running: ports chosen at `up` filled in; what every node reads
        self.resolved = self.state / "topology.resolved.yaml"
        self.socket = self.state / "supervisor.sock"
        self.supervisor_log = self.logs / "supervisor.log"

    def log(self, name):
        return self.logs / f"{name}.log"

    def data(self, name):
        return self.state / name

    def outbox(self, client):
        return self.state / client / "outbox.db"

    def sender_lock(self, client):
        return self.state / client / "sender.lock"

    def create(self):
        for directory in (self.certs, self.state, self.logs):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.make_private()

    def make_private(self):
        """Remove group and other permissions from everything under certs/, state/ and logs/."""
        for top in (self.certs, self.state, self.logs):
            for path in (top, *top.rglob("*")):
                with contextlib.suppress(FileNotFoundError):  # e.g. a lock file gone meanwhile
                    mode = path.lstat().st_mode
                    if not stat.S_ISLNK(mode) and mode & 0o077:
                        os.chmod(path, stat.S_IMODE(mode) & ~0o077)
