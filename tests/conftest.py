"""Fixtures: deployments in temporary directories, torn down after their tests (helpers: tests/helpers.py)."""
import compileall
import pathlib
import textwrap

import pytest

import strife

from tests.helpers import PAYMENT_TOPOLOGY, SMALL_TOPOLOGY, Deployment, started


def pytest_configure(config):
    """Strife's bytecode written once, before any test: a suite starts a few hundred Python processes
    of it (nodes, supervisors, CLI commands), and where PYTHONDONTWRITEBYTECODE is set (as on our
    machines) each compiled every module it imports from source, about 90 ms of CPU per process.
    py_compile writes regardless of that variable, and an interpreter still reads what it finds."""
    if not hasattr(config, "workerinput"):  # once, in the process that starts the xdist workers
        compileall.compile_dir(pathlib.Path(strife.__file__).parent, quiet=1)


# The files that take longest (seconds of wall under `-n 2`, measured), started first: xdist hands a
# worker a whole file at a time (--dist loadfile), and a long file started last kept one worker busy
# for half a minute after the other had finished. The rest follow in collection order.
LONGEST_FIRST = ("test_launcher.py", "test_hosts_cluster.py", "test_bench.py", "test_chaos_and_verify.py",
                 "test_cli_contract.py", "test_recovery.py", "test_gateways.py", "test_logs.py", "test_observe.py",
                 "test_outbox.py", "test_etcd_growth.py", "test_gateway_resources.py",
                 "test_hostile_input.py", "test_disk_full.py", "test_newcomer.py", "test_login_limits.py")


def pytest_collection_modifyitems(items):
    """Longest files first (see LONGEST_FIRST; pyproject's --no-loadscope-reorder keeps this order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture
def deployment(tmp_path_factory):
    """deployment(topology_text) -> a Deployment in a fresh directory, torn down after the test."""
    made = []

    def make(topology=SMALL_TOPOLOGY, name="home"):
        home = tmp_path_factory.mktemp(name)
        (home / "topology.yaml").write_text(textwrap.dedent(topology))
        made.append(Deployment(home))
        return made[-1]

    yield make
    for d in made:
        d.teardown()


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    """One payment deployment shared by every test that leaves it as it found it (each measures its
    own deltas); tests that break a deployment (kill for good, certificates, full disk) make their own."""
    with started(tmp_path_factory, "live", PAYMENT_TOPOLOGY) as d:
        yield d
