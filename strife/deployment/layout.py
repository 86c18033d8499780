"""Where a deployment keeps its runtime files, below the directory of its topology file.

All of it is its owner's alone: directories 0700, files 0600 (every entry point sets umask 077;
`create` also takes group and other access away from what older deployments left readable).
"""
import contextlib
import os
import pathlib
import stat

from strife.deployment.identities import CA_FILE

TRACE_SUFFIX = ".trace.jsonl"  # a node's timeline of payments, beside its log


class Layout:
    def __init__(self, home):
        self.home = pathlib.Path(home).resolve()
        self.certs = self.home / "certs"
        self.state = self.home / "state"
        self.logs = self.home / "logs"
        # the topology as running: ports chosen at `up` filled in; what every node reads
        self.resolved = self.state / "topology.resolved.json"
        self.socket = self.state / "supervisor.sock"
        self.supervisor_log = self.logs / "supervisor.log"

        self.credentials = self.state / "credentials.json"  # demo passwords (strife/deployment/credentials.py)
        # with hosts: which host runs which node (for the CLI to find each host's supervisor), and
        # the network faults in force (strife/launcher/faults.py)
        self.placement = self.state / "hosts.json"
        self.faults = self.state / "faults.json"

    # ---- with hosts: one supervisor per host ----

    def host_socket(self, host):
        return self.state / f"supervisor-{host}.sock"

    def host_supervisor_log(self, host):
        return self.logs / f"supervisor-{host}.log"

    # ---- certs/ ----

    def cert(self, name):
        return self.certs / f"{name}.pem"

    def key(self, name):
        return self.certs / f"{name}.key"

    def public_key(self, name):
        return self.certs / f"{name}.pub"

    def ca_cert(self, domain):
        return self.cert(CA_FILE[domain])

    def ca_key(self, domain):
        return self.key(CA_FILE[domain])

    # ---- logs/ ----

    def log(self, name):
        return self.logs / f"{name}.log"

    def trace(self, name):
        """A node's timeline of payments (strife/observe/timeline.py); rotated beside it."""
        return self.logs / f"{name}{TRACE_SUFFIX}"

    def traces(self):
        """Every timeline file, the rotated ones too."""
        return sorted(p for p in self.logs.glob(f"*{TRACE_SUFFIX}*") if p.is_file())

    # ---- state/: a directory per node or user ----

    def data(self, name):
        """A node's own directory (an etcd member's data directory, a bank's or the gateway's)."""
        return self.state / name

    def ledger(self, bank):
        return self.data(bank) / "ledger.db"

    def gateway_db(self, gateway):
        return self.data(gateway) / "gateway.db"

    def outbox(self, client):
        return self.data(client) / "outbox.db"

    def sender_lock(self, client):
        return self.data(client) / "sender.lock"

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
