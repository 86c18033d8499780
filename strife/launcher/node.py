"""What the supervisor knows about one node: its state, its current process and its record."""
from strife.launcher.states import ALIVE, State, check


class NodeProcess:
    def __init__(self, spec):
        self.spec = spec
        self.state = State.STOPPED
        self.child = None           # the current (or last) process, see process.Child
        self.restarts = 0           # every restart after the first start
        self.failures = 0           # consecutive failed runs; reset once a run was healthy and stable
        self.killed = False         # the operator killed the current process: not a failure
        self.started_at = None      # monotonic, of the current process
        self.ready_at = None        # monotonic, when the current process became ready
        self.running_since = None   # wall clock, for uptime
        self.health = "-"
        self.last_exit = None
        self.history = [State.STOPPED]  # every state it has been in, for tests and post-mortems

    @property
    def name(self):
        return self.spec.name

    @property
    def pid(self):
        """The pid of a live process of ours, never of one that has exited."""
        child = self.child
        if child is None or child.returncode is not None or self.state not in ALIVE:
            return None
        return child.pid

    def signal(self, signum):
        """Signal the current process's group; False when there is none alive."""
        return self.child is not None and self.child.signal_group(signum)

    def set_state(self, new):
        check(self.state, new)
        self.state = new
        self.history.append(new)
        del self.history[:-32]

    def attach(self, child, now, wall):
        self.child, self.started_at, self.running_since = child, now, wall
        self.ready_at = None
        self.killed = False

    def uptime(self, wall):
        if self.state not in (State.RUNNING, State.PAUSED) or self.running_since is None:
            return None
        return wall - self.running_since

    def describe(self, wall):
        spec = self.spec
        uptime = self.uptime(wall)
        return {"name": spec.name, "kind": spec.kind, "pid": self.pid, "state": self.state.value,
                "health": self.health, "restarts": self.restarts,
                "uptime": round(uptime, 1) if uptime is not None else None,
                "address": spec.address, "metrics": spec.metrics_address, "last_exit": self.last_exit,
                "host": spec.host_name}
