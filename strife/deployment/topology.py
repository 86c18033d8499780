"""The topology: a typed model of one deployment, and the validation that builds it.

Every problem is reported at once, one line each, naming the field path and why
(`banks.bank2.port: 7001 already used by gateway`), before anything is started.
"""
import dataclasses
import enum
import functools
import hashlib
import ipaddress
import json
import pathlib
import re
from typing import Any

from strife.core.durations import DurationError, parse_duration
from strife.core.errors import BadInput, NotRunning
from strife.core.failpoints import STEPS, FailpointError, parse_action
from strife.core.money import AmountError, format_minor, parse_amount
from strife.core.names import problem as name_problem
from strife.deployment.layout import Layout


class NodeKind(enum.StrEnum):
    ETCD = "etcd"
    BANK = "bank"
    GATEWAY = "gateway"
    CLIENT = "client"


KINDS = tuple(NodeKind)  # also the start order


class RestartPolicy(enum.StrEnum):
    ALWAYS = "always"          # any exit
    ON_FAILURE = "on-failure"  # a non-zero exit (the default)
    NO = "no"                  # never


RESTART_POLICIES = tuple(RestartPolicy)
LOG_FORMATS = ("text", "json")
MB = 1024 * 1024
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": MB, "mb": MB, "mib": MB,
              "g": 1024 * MB, "gb": 1024 * MB, "gib": 1024 * MB}
SIZE = re.compile(r"(\d+(?:\.\d+)?) *([a-z]*)")
MIN_LOG_BYTES, MAX_LOG_BYTES = 4096, 1024 * MB  # below a few records a file, a node would only rotate
ROLES = ("client", "admin")
SHORT_GATEWAY = "gateway"  # the name of the one gateway of the short form `gateway: {...}`
HOST_NAME = re.compile(r"[a-z][a-z0-9-]{0,15}")


class TopologyError(BadInput):
    """The file cannot be used; `problems` lists every `path: why` found."""

    def __init__(self, problems):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def format_size(size):
    for unit, factor in (("GB", 1024 * MB), ("MB", MB), ("KB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


@dataclasses.dataclass(frozen=True)
class Settings:
    prepare_timeout: float = 2.0
    hold_timeout: float = 30.0
    max_amount_minor: int = 1_000_000  # 10,000.00
    start_timeout: float = 30.0       # STARTING -> healthy, else a failed start
    stop_grace: float = 5.0           # SIGTERM -> SIGKILL
    backoff: float = 0.5              # first restart delay, doubled per consecutive failure
    max_restarts: int = 5             # consecutive failed starts before FATAL
    log_max_bytes: int = 10 * MB      # a node's log file is rotated at this size ...
    log_keep: int = 4                 # ... and this many rotated files are kept: 5 files at most
    log_format: str = "text"          # or "json": one JSON object per line
    # a payment's record in etcd (terms, decision, answer) lives this long after its phase 2
    idempotency_retention: float = 3600.0  # bounds etcd: see docs/architecture.md
    trace_sample: float = 1.0         # share of payments whose timeline is written (strife/observe/timeline.py)
    # one process per node kind imported ahead of time, so a restart skips the imports
    # (strife/launcher/spawner.py); false saves its memory and the CPU of making it after `up`
    warm_spares: bool = True


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    kind: NodeKind
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free one at `up`
    metrics_port: int = 0  # Prometheus metrics (strife/observe/metrics.py); 0 = chosen at `up`
    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    max_restarts: int | None = None  # None = settings.max_restarts
    failpoints: tuple = ()           # ((step, action), ...) armed at start
    # clients only
    bank: str | None = None
    role: str = "client"
    balance_minor: int = 0
    # etcd members only
    peer_port: int = 0
    # with a `hosts:` section: the host the node runs on (then `host` above is that host's address)
    host_name: str | None = None

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    @property
    def metrics_address(self):
        return f"{self.host}:{self.metrics_port}" if self.metrics_port else None


@dataclasses.dataclass(frozen=True)
class Host:
    """A machine of the deployment (on one Linux machine as root: a network namespace)."""
    name: str
    address: str


@dataclasses.dataclass(frozen=True)
class EtcdConfig:
    members: int = 1
    binary: str | None = None
    endpoints: tuple = ()  # an existing cluster: nothing is spawned
    tls: bool = True       # external endpoints speak plain http unless told otherwise


@dataclasses.dataclass(frozen=True)
class Topology:
    path: pathlib.Path
    home: pathlib.Path  # where certs/, state/ and logs/ live: the topology file's directory
    settings: Settings
    etcd: EtcdConfig
    nodes: tuple  # in start order
    hosts: tuple = ()  # Host, ...: empty when every node runs on this machine at its `host` address

    @functools.cached_property
    def layout(self) -> Layout:
        """Where this deployment's files are: the one place every path comes from."""
        return Layout(self.home)

    def node(self, name):
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def of_kind(self, kind):
        return [n for n in self.nodes if n.kind == kind]

    def etcd_endpoints(self):
        if self.etcd.endpoints:
            return list(self.etcd.endpoints)
        return [n.address for n in self.of_kind("etcd")]

    def with_nodes(self, nodes):
        return dataclasses.replace(self, nodes=tuple(nodes))

    def host(self, name):
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def on_host(self, name):
        """The nodes that run on host `name`, in start order."""
        return [n for n in self.nodes if n.host_name == name]

    def with_host_addresses(self, addresses):
        """The same deployment with hosts moved to new addresses ({host name: address})."""
        hosts = tuple(dataclasses.replace(h, address=addresses[h.name]) for h in self.hosts)
        nodes = [dataclasses.replace(n, host=addresses[n.host_name]) if n.host_name else n for n in self.nodes]
        return dataclasses.replace(self, hosts=hosts, nodes=tuple(nodes))

    def to_yaml(self):
        import yaml  # only here and in _read_yaml: see _read_json
        return yaml.safe_dump(self._document(), sort_keys=False)

    def to_json(self):
        """The resolved form `up` writes for the nodes (also YAML: JSON is YAML's flow style)."""
        return json.dumps(self._document(), indent=1) + "\n"

    def _document(self):
        """The same schema back, e.g. with the ports chosen at `up` filled in."""
        s = self.settings
        doc = {"settings": {
            "prepare_timeout": f"{s.prepare_timeout}s", "hold_timeout": f"{s.hold_timeout}s",
            "max_amount": format_minor(s.max_amount_minor), "start_timeout": f"{s.start_timeout}s",
            "stop_grace": f"{s.stop_grace}s", "backoff": f"{s.backoff}s", "max_restarts": s.max_restarts,
            "log_max_bytes": s.log_max_bytes, "log_keep": s.log_keep, "log_format": s.log_format,
            "idempotency_retention": f"{s.idempotency_retention}s",
            "trace_sample": s.trace_sample, "warm_spares": s.warm_spares}}
        members = self.of_kind("etcd")
        etcd = {"members": self.etcd.members, "tls": self.etcd.tls}
        if self.etcd.binary:
            etcd["binary"] = self.etcd.binary
        if self.etcd.endpoints:
            etcd["endpoints"] = list(self.etcd.endpoints)
        if members:
            etcd.update(host=members[0].host, ports=[[m.port, m.peer_port] for m in members],
                        **_common(members[0]))
            if any(m.metrics_port for m in members):
                etcd["metrics_port"] = [m.metrics_port for m in members]
        doc["etcd"] = etcd
        doc["banks"] = {b.name: {"host": b.host, "port": b.port, **_common(b)} for b in self.of_kind("bank")}
        gateways = {g.name: {"host": g.host, "port": g.port, **_common(g)} for g in self.of_kind("gateway")}
        if list(gateways) == [SHORT_GATEWAY]:
            doc["gateway"] = gateways[SHORT_GATEWAY]
        else:
            doc["gateways"] = gateways
        doc["clients"] = {c.name: {"bank": c.bank, "role": c.role, "balance": format_minor(c.balance_minor),
                                   "host": c.host, "port": c.port, **_common(c)}
                          for c in self.of_kind("client")}
        if self.hosts:
            doc = _name_hosts(doc, self)
        return doc


def _name_hosts(doc, topology):
    """With hosts, nodes say which host they run on (`host: h1`), not its address."""
    named = {h.address: h.name for h in topology.hosts}
    doc = {"settings": doc.pop("settings"), "hosts": {h.name: {"address": h.address} for h in topology.hosts},
           **doc}
    etcd = doc["etcd"]
    if "host" in etcd:
        etcd.pop("host")
        etcd["hosts"] = [m.host_name for m in topology.of_kind("etcd")]
    for section in doc.values():
        if isinstance(section, dict):
            for entry in (section, *section.values()):
                if isinstance(entry, dict) and entry.get("host") in named:
                    entry["host"] = named[entry["host"]]
    return doc


def default_subnet(home):
    """The private /24 a deployment's hosts get when the topology gives no addresses: one of 32768
    in 10.64.0.0/9, from the deployment's directory, so two deployments on one machine differ
    (`up` moves on to the next one if the machine already uses it)."""
    digest = hashlib.sha256(str(home).encode()).digest()
    return subnet_at(int.from_bytes(digest[:2], "big") % 32768)


def subnet_at(index):
    return ipaddress.ip_network(f"10.{64 + index // 256}.{index % 256}.0/24")


def host_addresses(subnet, hosts):
    """{host: address}: the first hosts of the subnet, in order (.1, .2, ...)."""
    return {name: str(subnet.network_address + i + 1) for i, name in enumerate(hosts)}


def _common(node):
    out: dict[str, Any] = {"restart": str(node.restart)}
    if node.metrics_port:
        out["metrics_port"] = node.metrics_port
    if node.max_restarts is not None:
        out["max_restarts"] = node.max_restarts
    if node.failpoints:
        out["failpoints"] = dict(node.failpoints)
    return out


def load(path, home=None):
    """Read and validate a topology file; raise TopologyError listing every problem.

    `home` defaults to the file's directory; nodes pass it when reading the resolved copy in state/.
    """
    path = pathlib.Path(path).resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError([f"{path}: cannot read ({exc.strerror})"]) from None
    doc = _read_json(text, path) if path.suffix == ".json" else _read_yaml(text, path)
    return parse(doc, path, home)


def _read_yaml(text, path):
    import yaml  # see _read_json
    from strife.deployment import yaml_loader
    try:
        return yaml_loader.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        kind = "" if isinstance(exc, yaml_loader.DuplicateKey) else "YAML syntax error: "
        raise TopologyError([f"{path.name}: {where}{kind}{problem}"]) from None
    except ValueError:  # a number of thousands of digits: Python refuses to convert it
        raise TopologyError([f"{path.name}: a number in the file is too long to be a port, count or amount"]) from None


def _read_json(text, path):
    """The resolved copy in state/, read by every node and supervisor at start: JSON, as strict as
    the YAML loader (a duplicate key is an error, a decimal stays text for its parser), because
    PyYAML's import and pure-Python parser cost a starting process ~40 ms of CPU (a test suite
    starts a few hundred)."""
    def no_duplicates(pairs):
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
        return dict(pairs)
    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_float=str)
    except ValueError as exc:  # JSONDecodeError is one; so is a number of thousands of digits
        raise TopologyError([f"{path.name}: {exc}"]) from None


class NotStarted(NotRunning):
    """No deployment has been started in this directory (no resolved topology)."""


def load_deployment(home):
    """The topology as running (ports chosen at `up` filled in), from state/topology.resolved.json."""
    layout = Layout(home)
    if not layout.resolved.exists():
        raise NotStarted(f"no deployment has been started in {layout.home} (run `strife up -d` first)")
    return load(layout.resolved, home=layout.home)


def parse(doc, path, home=None):
    v = _Validator()
    path = pathlib.Path(path)
    topology = v.topology(doc, path, pathlib.Path(home).resolve() if home else path.parent)
    if v.problems:
        raise TopologyError(v.problems)
    return topology


class _Validator:
    """Walks the document once, collecting `path: why` lines instead of stopping at the first."""

    def __init__(self):
        self.problems = []
        self.hosts = ()

    def bad(self, where, why):
        self.problems.append(f"{where}: {why}")

    def mapping(self, value, where, allowed, required=()):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.bad(where, f"must be a mapping, not {type(value).__name__}")
            return {}
        for key in value:
            if key not in allowed:
                self.bad(f"{where}.{key}" if where else str(key),
                         f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        for key in required:
            if key not in value:
                self.bad(f"{where}.{key}" if where else key, "is required")
        return value

    def integer(self, value, where, low, high):
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(where, f"{value!r} is not a whole number")
            return low
        if not low <= value <= high:
            self.bad(where, f"{value} is out of range {low}..{high}")
            return low
        return value

    def duration(self, value, where, default):
        if value is None:
            return default
        try:
            return parse_duration(value)
        except DurationError as exc:
            self.bad(where, str(exc))
            return default

    def choice(self, value, where, options, default):
        if value is None:
            return default
        if value not in options:
            self.bad(where, f"{value!r} is not one of {', '.join(options)}")
            return default
        return value

    def topology(self, doc, path, home):
        doc = self.mapping(doc, "", {"settings", "hosts", "etcd", "banks", "gateway", "gateways", "clients"},
                           required=("banks", "clients"))
        settings = self.settings(doc.get("settings"))
        self.hosts = self.parse_hosts(doc.get("hosts"), home) if "hosts" in doc else ()
        etcd, members = self.etcd(doc.get("etcd"))
        banks = self.named_nodes(doc.get("banks"), "banks", "bank")
        gateways = self.gateways(doc)
        clients = self.named_nodes(doc.get("clients"), "clients", "client")
        nodes = members + banks + gateways + clients
        self.cross_check(nodes, banks, clients, doc)
        return Topology(path=path, home=home, settings=settings, etcd=etcd, nodes=tuple(nodes), hosts=self.hosts)

    def parse_hosts(self, raw, home):
        """`hosts: {h1: {address: 10.1.2.1}, h2: {}}`: every host with an address, or none (then
        they get the deployment's default subnet)."""
        if not isinstance(raw, dict) or not raw:
            self.bad("hosts", "must be a mapping of host names to their settings, e.g. {h1: {}, h2: {}}")
            return ()
        names, given = [], {}
        for name, spec in raw.items():
            where = f"hosts.{name}"
            if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
                self.bad("hosts", f"{name!r} is not a usable host name: 1 to 16 lower-case letters, digits "
                                  f"and -, starting with a letter")
                continue
            spec = self.mapping(spec, where, {"address"})
            names.append(name)
            if "address" in spec:
                address = spec["address"]
                try:
                    ip = ipaddress.IPv4Address(str(address))
                except ValueError:
                    self.bad(f"{where}.address", f"{address!r} is not an IPv4 address")
                    continue
                if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
                    self.bad(f"{where}.address", f"{address} cannot be a host's own address")
                    continue
                owner = next((h for h, a in given.items() if a == str(ip)), None)
                if owner:
                    self.bad(f"{where}.address", f"{ip} already used by hosts.{owner}")
                    continue
                given[name] = str(ip)
        if given and len(given) != len(names):
            missing = [n for n in names if n not in given]
            self.bad(f"hosts.{missing[0]}.address", "give an address to every host or to none "
                                                   "(then they share a private /24 chosen per deployment)")
        addresses = given if len(given) == len(names) else host_addresses(default_subnet(home), names)
        return tuple(Host(name, addresses[name]) for name in names)

    def place(self, raw_host, where, default_host):
        """(address, host name) of a node: with hosts, `host:` names one of them."""
        if not self.hosts:
            if raw_host is None:
                return "127.0.0.1", None
            if not isinstance(raw_host, str) or not raw_host:
                self.bad(f"{where}.host", "must be a host name or address")
                return "127.0.0.1", None
            return raw_host, None
        name = default_host if raw_host is None else raw_host
        for host in self.hosts:
            if host.name == name:
                return host.address, host.name
        self.bad(f"{where}.host", f"{name!r} is not one of the hosts {', '.join(h.name for h in self.hosts)}")
        return self.hosts[0].address, self.hosts[0].name

    def gateways(self, doc):
        """`gateways: {gw1: {...}, ...}`, or the one-gateway short form `gateway: {...}` (named `gateway`)."""
        if "gateway" in doc and "gateways" in doc:
            self.bad("gateways", "give either `gateway:` (one gateway) or `gateways:` (named gateways), not both")
            return []
        if "gateways" in doc:
            named = self.named_nodes(doc.get("gateways"), "gateways", "gateway")
            if not named and doc.get("gateways") is None:
                self.bad("gateways", "at least one gateway is needed")
            return named
        if "gateway" not in doc:
            self.bad("gateway", "is required (or `gateways:` with named gateways)")
            return []
        return [self.node(SHORT_GATEWAY, "gateway", doc.get("gateway") or {}, "gateway")]

    def settings(self, raw):
        raw = self.mapping(raw, "settings", {"prepare_timeout", "hold_timeout", "max_amount", "start_timeout",
                                             "stop_grace", "backoff", "max_restarts", "log_max_bytes",
                                             "log_keep", "log_format", "idempotency_retention", "trace_sample",
                                             "warm_spares"})
        d = Settings()
        max_minor = d.max_amount_minor
        if "max_amount" in raw:
            try:
                max_minor = parse_amount(raw["max_amount"])
            except AmountError as exc:
                self.bad("settings.max_amount", str(exc))
        return Settings(
            prepare_timeout=self.duration(raw.get("prepare_timeout"), "settings.prepare_timeout", d.prepare_timeout),
            hold_timeout=self.duration(raw.get("hold_timeout"), "settings.hold_timeout", d.hold_timeout),
            max_amount_minor=max_minor,
            start_timeout=self.duration(raw.get("start_timeout"), "settings.start_timeout", d.start_timeout),
            stop_grace=self.duration(raw.get("stop_grace"), "settings.stop_grace", d.stop_grace),
            backoff=self.duration(raw.get("backoff"), "settings.backoff", d.backoff),
            max_restarts=self.integer(raw.get("max_restarts", d.max_restarts), "settings.max_restarts", 0, 100),
            log_max_bytes=self.size(raw.get("log_max_bytes"), "settings.log_max_bytes", d.log_max_bytes,
                                    MIN_LOG_BYTES, MAX_LOG_BYTES),
            log_keep=self.integer(raw.get("log_keep", d.log_keep), "settings.log_keep", 0, 1000),
            log_format=self.choice(raw.get("log_format"), "settings.log_format", LOG_FORMATS, d.log_format),
            idempotency_retention=self.duration(raw.get("idempotency_retention"), "settings.idempotency_retention",
                                                d.idempotency_retention),
            trace_sample=self.share(raw.get("trace_sample"), "settings.trace_sample", d.trace_sample),
            warm_spares=self.flag(raw.get("warm_spares"), "settings.warm_spares", d.warm_spares),
        )

    def flag(self, value, where, default):
        if value is None:
            return default
        if not isinstance(value, bool):
            self.bad(where, f"{value!r} must be true or false")
            return default
        return value

    def share(self, value, where, default):
        """A fraction from 0 to 1 (0.1 = one in ten)."""
        if value is None:
            return default
        try:  # the YAML loader keeps decimals as text (amounts must never be floats)
            share = None if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            share = None
        if share is None or not 0 <= share <= 1:  # nan fails the comparison too
            self.bad(where, f"{value!r} is not a number from 0 to 1")
            return default
        return share

    def size(self, value, where, default, low, high):
        """Bytes: a whole number, or with a unit (`10MB`, `512 KiB`; K, M and G count 1024s)."""
        if value is None:
            return default
        match = None if isinstance(value, bool) else SIZE.fullmatch(str(value).strip().lower())
        if not match or match.group(2) not in SIZE_UNITS:
            self.bad(where, f"{value!r} is not a size (e.g. 10MB, 512KB or 1048576)")
            return default
        size = int(float(match.group(1)) * SIZE_UNITS[match.group(2)])
        if not low <= size <= high:
            self.bad(where, f"{value} is out of range {format_size(low)}..{format_size(high)}")
            return default
        return size

    def etcd(self, raw):
        raw = self.mapping(raw, "etcd", {"members", "port", "ports", "host", "hosts", "binary", "endpoints", "tls",
                                         "restart", "max_restarts", "failpoints", "metrics_port"})
        endpoints = raw.get("endpoints") or []
        if not isinstance(endpoints, list) or not all(isinstance(e, str) and e for e in endpoints):
            self.bad("etcd.endpoints", "must be a list of host:port strings")
            endpoints = []
        tls = raw.get("tls", not endpoints)
        if not isinstance(tls, bool):
            self.bad("etcd.tls", "must be true or false")
            tls = True
        members = self.integer(raw.get("members", 1), "etcd.members", 1, 7)
        if members not in (1, 3, 5, 7):
            self.bad("etcd.members", f"{members}: a cluster needs an odd number of members (1, 3, 5 or 7)")
            members = 1
        config = EtcdConfig(members=members, binary=raw.get("binary"), endpoints=tuple(endpoints), tls=tls)
        if endpoints:
            return config, []  # an existing cluster: we spawn nothing
        ports = self.etcd_ports(raw, members)
        base = {k: raw[k] for k in ("host", "restart", "max_restarts", "failpoints") if k in raw}
        placed = self.etcd_hosts(raw, members)
        metrics_ports = raw.get("metrics_port", 0)  # the resolved form: one per member
        nodes = []
        for i in range(members):
            name = "etcd" if members == 1 else f"etcd{i + 1}"
            node = self.node(name, "etcd", dict(base, port=0, **placed[i]), "etcd")
            metrics = self.etcd_metrics_port(metrics_ports, i, members)
            nodes.append(dataclasses.replace(node, port=ports[i][0], peer_port=ports[i][1], metrics_port=metrics))
        return config, nodes

    def etcd_hosts(self, raw, members):
        """With hosts: `etcd.hosts: [h1, h2, h3]` (one per member), or `etcd.host` for all, or by
        default member i on the i-th host (round the list): [{'host': name} or {}] per member."""
        if "hosts" not in raw:
            if self.hosts and "host" not in raw:
                return [{"host": self.hosts[i % len(self.hosts)].name} for i in range(members)]
            return [{}] * members
        listed = raw["hosts"]
        if not self.hosts:
            self.bad("etcd.hosts", "needs a `hosts:` section naming the hosts")
            return [{}] * members
        if "host" in raw:
            self.bad("etcd.hosts", "give etcd.host (all members on one host) or etcd.hosts, not both")
        if not isinstance(listed, list) or len(listed) != members:
            self.bad("etcd.hosts", f"must list a host for each of the {members} members")
            return [{"host": self.hosts[0].name}] * members
        known = [h.name for h in self.hosts]
        for name in listed:
            if name not in known:
                self.bad("etcd.hosts", f"{name!r} is not one of the hosts {', '.join(known)}")
        return [{"host": h if h in known else known[0]} for h in listed]

    def etcd_ports(self, raw, members):
        """`port: N` gives member i client port N+2i and peer port N+2i+1; 0 picks free ones."""
        if "ports" in raw:  # the resolved form written back at `up`
            ports = raw["ports"]
            if not (isinstance(ports, list) and len(ports) == members
                    and all(isinstance(p, list) and len(p) == 2 for p in ports)):
                self.bad("etcd.ports", f"must list [client, peer] ports for each of the {members} members")
                return [(0, 0)] * members
            return [tuple(self.integer(x, "etcd.ports", 0, 65535) for x in p) for p in ports]
        base = self.integer(raw.get("port", 0), "etcd.port", 0, 65535 - 2 * members)
        return [(base + 2 * i, base + 2 * i + 1) if base else (0, 0) for i in range(members)]

    def etcd_metrics_port(self, raw, i, members):
        """`metrics_port: N` gives member i port N+i (0 picks free ones); the resolved form lists them."""
        if isinstance(raw, list):
            if len(raw) != members:
                self.bad("etcd.metrics_port", f"must list a port for each of the {members} members")
                return 0
            return self.integer(raw[i], "etcd.metrics_port", 0, 65535)
        base = self.integer(raw, "etcd.metrics_port", 0, 65535 - members)
        return base + i if base else 0

    def named_nodes(self, raw, section, kind):
        if not isinstance(raw, dict) or not raw:
            if raw is not None:
                self.bad(section, f"must be a mapping of {kind} names to their settings")
            return []
        return [self.node(name, kind, spec or {}, f"{section}.{name}") for name, spec in raw.items()]

    def node(self, name, kind, raw, where):
        allowed = {"host", "port", "metrics_port", "restart", "max_restarts", "failpoints"}
        if kind == "client":
            allowed |= {"bank", "role", "balance"}
        raw = self.mapping(raw, where, allowed, required=("bank",) if kind == "client" else ())
        if kind in ("bank", "client") or where.startswith("gateways."):  # etcd members, the short gateway: by Strife
            why = name_problem(name)
            if why:
                self.bad(where, why)
        host, host_name = self.place(raw.get("host"), where, self.hosts[0].name if self.hosts else None)
        restart = raw.get("restart")
        if restart is False:  # YAML 1.1 reads an unquoted `no` as false: the policy of that name
            restart = RestartPolicy.NO
        fields: dict[str, Any] = dict(
            name=str(name), kind=NodeKind(kind), host=host, host_name=host_name,
            port=self.integer(raw.get("port", 0), f"{where}.port", 0, 65535),
            metrics_port=self.integer(raw.get("metrics_port", 0), f"{where}.metrics_port", 0, 65535),
            restart=RestartPolicy(self.choice(restart, f"{where}.restart", RESTART_POLICIES, RestartPolicy.ON_FAILURE)),
            max_restarts=(self.integer(raw["max_restarts"], f"{where}.max_restarts", 0, 100)
                          if "max_restarts" in raw else None),
            failpoints=self.failpoints(raw.get("failpoints"), f"{where}.failpoints", kind),
        )
        if kind == "client":
            fields.update(bank=raw.get("bank"), role=self.choice(raw.get("role"), f"{where}.role", ROLES, "client"),
                          balance_minor=self.balance(raw.get("balance", 0), f"{where}.balance"))
        return Node(**fields)

    def balance(self, value, where):
        try:
            return parse_amount(value, allow_zero=True)
        except AmountError as exc:
            self.bad(where, str(exc))
            return 0

    def failpoints(self, raw, where, kind):
        raw = raw or {}
        if not isinstance(raw, dict):
            self.bad(where, "must map a step to an action, e.g. {start: crash}")
            return ()
        out = []
        for step, action in raw.items():
            if step not in STEPS[kind]:
                self.bad(f"{where}.{step}", f"not a step of a {kind} (steps: {', '.join(STEPS[kind]) or 'none'})")
                continue
            try:
                parse_action(str(action))
                out.append((str(step), str(action)))
            except FailpointError as exc:
                self.bad(f"{where}.{step}", str(exc))
        return tuple(out)

    def cross_check(self, nodes, banks, clients, doc):
        if not banks and "banks" in doc:
            self.bad("banks", "at least one bank is needed")
        where = {n.name: _section(n) for n in nodes}
        seen = {}
        for node in nodes:
            if node.name in seen:
                self.bad(where[node.name], f"name {node.name!r} already used by {seen[node.name]}")
            seen.setdefault(node.name, _section(node))
        bank_names = {b.name for b in banks}
        for client in clients:
            if client.bank is not None and client.bank not in bank_names:
                known = ", ".join(sorted(bank_names)) or "none"
                self.bad(f"clients.{client.name}.bank", f"unknown bank {client.bank!r} (banks: {known})")
        used = {}
        for node in nodes:
            for label, port in (("port", node.port), ("peer port", node.peer_port),
                                ("metrics port", node.metrics_port)):
                if not port or (label == "metrics port" and node.kind == NodeKind.ETCD and port == node.port):
                    continue  # (etcd serves /metrics on its client port too: on hosts, strife/launcher/ports.py)
                key = (node.host_name, port)  # with hosts, each host has its own ports
                if key in used:
                    self.bad(f"{_section(node)}.port", f"{port} already used by {used[key]}")
                else:
                    used[key] = node.name if label == "port" else f"{node.name} ({label})"


def _section(node):
    if node.kind == NodeKind.ETCD:
        return "etcd"
    if node.kind == NodeKind.GATEWAY and node.name == SHORT_GATEWAY:
        return "gateway"
    return f"{node.kind}s.{node.name}"
