"""A seeded fault schedule: the same seed, length and topology always give the same faults."""
import dataclasses
import random

from strife.core.failpoints import TWO_PHASE


@dataclasses.dataclass(frozen=True)
class Fault:
    at: float          # seconds after the workload starts
    kind: str          # pause | kill | failpoint | restart-etcd | partition | isolate | loss
    node: str          # "" for the network faults, which name hosts
    action: str = ""   # failpoint: STEP=ACTION
    duration: float = 0.0  # pause, failpoints and network faults are taken back after this long
    hosts: tuple = ()  # network faults: the hosts (partition: two)
    percent: float = 0.0  # loss

    def describe(self):
        hosts = " ".join(self.hosts)
        what = {"pause": f"pause {self.node} for {self.duration:.1f}s", "kill": f"kill {self.node}",
                "restart-etcd": f"kill {self.node} (etcd restart)",
                "failpoint": f"failpoint {self.node}:{self.action} for {self.duration:.1f}s",
                "partition": f"partition {hosts} for {self.duration:.1f}s",
                "isolate": f"isolate {hosts} for {self.duration:.1f}s",
                "loss": f"loss {hosts} {self.percent:g}% for {self.duration:.1f}s"}[self.kind]
        return f"t+{self.at:.1f}s {what}"


NETWORK = ("partition", "isolate", "loss")


def plan(seed, seconds, topology, outbox_client, network=False):
    """`network`: the topology has hosts and their namespaces can be changed here (root): partitions,
    isolation and loss join the node faults."""
    rng = random.Random(seed)
    banks = [b.name for b in topology.of_kind("bank")]
    gateways = [g.name for g in topology.of_kind("gateway")]
    members = [m.name for m in topology.of_kind("etcd")]
    choices = [
        lambda at: Fault(at, "pause", rng.choice(banks), duration=rng.uniform(0.5, 2.5)),
        lambda at: Fault(at, "kill", rng.choice(banks)),
        lambda at: Fault(at, "failpoint", rng.choice(banks),
                         f"{rng.choice(TWO_PHASE['bank'])}={rng.choice(['pause', 'delay:400ms', 'error', 'crash'])}",
                         duration=rng.uniform(0.5, 2.0)),
        lambda at: Fault(at, "failpoint", rng.choice(gateways),
                         f"{rng.choice(TWO_PHASE['gateway'])}={rng.choice(['crash', 'delay:400ms', 'error'])}",
                         duration=rng.uniform(0.5, 2.0)),
        lambda at: Fault(at, "kill", rng.choice(gateways)),
        lambda at: Fault(at, "kill", outbox_client),
    ]
    if members:
        choices.append(lambda at: Fault(at, "restart-etcd", rng.choice(members)))
    hosts = [h.name for h in topology.hosts]
    if network and len(hosts) >= 2:
        choices += [
            lambda at: Fault(at, "partition", "", hosts=tuple(rng.sample(hosts, 2)), duration=rng.uniform(1.0, 3.0)),
            lambda at: Fault(at, "isolate", "", hosts=(rng.choice(hosts),), duration=rng.uniform(1.0, 3.0)),
            lambda at: Fault(at, "loss", "", hosts=(rng.choice(hosts),), percent=rng.choice([5, 10, 20]),
                             duration=rng.uniform(1.0, 4.0)),
        ]
    faults, at = [], 1.0
    while at < seconds - 1.0:
        faults.append(rng.choice(choices)(round(at, 2)))
        at += rng.uniform(1.0, 2.5)
    return faults
