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
