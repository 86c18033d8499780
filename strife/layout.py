"""Where a deployment keeps its runtime files, below the directory of its topology file."""
import pathlib


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
        for directory in (self.state, self.logs):
            directory.mkdir(parents=True, exist_ok=True)
