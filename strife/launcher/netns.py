"""Hosts on one Linux machine: a network namespace per host, each with its own address on a veth
pair whose other end is on a bridge in the machine's own namespace (where the bridge has an
address too, so `strife client`, `verify` and `bench` reach every host from outside).

Every name carries a short digest of the deployment's directory, so two deployments never touch
each other's namespaces or links, and the leftovers of a crashed `up` are found and removed by
name. Needs root (CAP_NET_ADMIN) and iproute2.
"""
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess

from strife.core.errors import Failed, Unsupported
from strife.deployment.topology import default_subnet, host_addresses, subnet_at

NAMESPACE_PREFIX = "strife-"


class NetworkError(Failed):
    pass


def deployment_tag(home):
    return hashlib.sha256(str(home).encode()).hexdigest()[:6]


class Network:
    """The namespaces, bridge and veths of one deployment's hosts."""

    def __init__(self, home, hosts=()):
        self.hosts = tuple(hosts)
        self.tag = deployment_tag(home)
        self.bridge = f"st{self.tag}br"  # interface names: at most 15 characters

    def namespace(self, host):
        return f"{NAMESPACE_PREFIX}{self.tag}-{host}"

    def veth(self, index):
        return f"st{self.tag}v{index}"

    def exec_prefix(self, host):
        """The command prefix that runs a program inside the host's namespace."""
        return ["ip", "netns", "exec", self.namespace(host)]

    # ---- what exists ----

    def namespaces(self):
        """This deployment's namespaces that exist now."""
        out = _ip("-j", "netns", "list", check=False)
        listed = json.loads(out or "[]")
        mine = f"{NAMESPACE_PREFIX}{self.tag}-"
        return sorted(entry["name"] for entry in listed if entry.get("name", "").startswith(mine))

    def links(self):
        """This deployment's links in the machine's namespace (the bridge and the veths' outer ends)."""
        listed = json.loads(_ip("-j", "link", "show", check=False) or "[]")
        return sorted(entry["ifname"] for entry in listed if entry.get("ifname", "").startswith(f"st{self.tag}"))

    def leftovers(self):
        return self.namespaces() + self.links()

    # ---- making and removing ----

    def remove(self):
        """Remove every namespace and link of this deployment (a veth goes with its namespace)."""
        for name in self.namespaces():
            _ip("netns", "delete", name, check=False)
        for link in self.links():
            _ip("link", "delete", link, check=False)
        left = self.leftovers()
        if left:
            raise NetworkError(f"could not remove {', '.join(left)}")

    def create(self):
        """Namespaces, veths and the bridge for every host; leftovers of an earlier run first.
        On failure nothing is left half-made."""
        self.remove()
        hosts = self.hosts
        network = one_subnet(hosts)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{bridge_address(network, hosts)}/{network.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for index, host in enumerate(hosts):
                ns, outer, inner = self.namespace(host.name), self.veth(index), f"st{self.tag}p{index}"
                _ip("netns", "add", ns)
                _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                _ip("link", "set", inner, "netns", ns)
                _ip("link", "set", outer, "master", self.bridge, "up")
                _ip("-n", ns, "link", "set", inner, "name", "eth0")
                _ip("-n", ns, "addr", "add", f"{host.address}/{network.prefixlen}", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise


def require_root(what="a topology with hosts"):
    """Raise Unsupported unless this process may make namespaces (root) and iproute2 is here."""
    if os.geteuid() != 0:
        raise Unsupported(f"{what} runs each host in its own network namespace on this machine, which needs "
                          f"root: run it as root (e.g. sudo strife up -d), or, on real machines, run "
                          f"`strife up -d --host NAME` on each host")
    if shutil.which("ip") is None:
        raise Unsupported(f"{what} needs iproute2's `ip` command (apt-get install iproute2)")


def one_subnet(hosts):
    """The /24 every host's address is in (on one machine the hosts share one bridge)."""
    networks = {ipaddress.ip_network(f"{h.address}/24", strict=False) for h in hosts}
    if len(networks) != 1:
        raise NetworkError("on one machine, the hosts' addresses must share one /24 (they share a bridge): "
                           + ", ".join(f"{h.name} {h.address}" for h in hosts))
    return networks.pop()


def bridge_address(network, hosts):
    """The machine's own address on the bridge: the highest of the subnet no host uses."""
    used = {h.address for h in hosts}
    return next(str(a) for a in reversed(list(network.hosts())) if str(a) not in used)


def addresses_in_use():
    """Every IPv4 network configured on this machine's interfaces (outside our namespaces)."""
    listed = json.loads(_ip("-j", "-4", "addr", "show", check=False) or "[]")
    return [ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for entry in listed for a in entry.get("addr_info", []) if "local" in a]


def place(topology):
    """The topology with its hosts on a subnet this machine does not use yet, when their addresses
    were left to Strife (the default subnet moves on while it clashes); given addresses stay."""
    names = [h.name for h in topology.hosts]
    current = {h.name: h.address for h in topology.hosts}
    default = default_subnet(topology.home)
    if current != host_addresses(default, names):
        return topology  # the user's addresses (or ones chosen before): kept
    own = Network(topology.home)
    if own.links():  # our own bridge from a crashed run holds the subnet: it is removed first
        return topology
    used = addresses_in_use()
    index = (int(default.network_address) >> 8) - (int(ipaddress.ip_address("10.64.0.0")) >> 8)
    for step in range(32768):
        subnet = subnet_at((index + step) % 32768)
        if not any(subnet.overlaps(u) for u in used):
            return topology.with_host_addresses(host_addresses(subnet, names))
    raise NetworkError("no free /24 left in 10.64.0.0/9 for the hosts; give them addresses in the topology")


def _ip(*args, check=True):
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetworkError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout
