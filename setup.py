"""Packaging glue: compile protos/ into strife/rpc before the package is built.

Runs for `pip install .` and `pip install -e .` alike, so generated code always
matches the pinned grpcio-tools and is never committed.
"""
import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent.resolve()


def compile_protos():
    from grpc_tools import protoc  # build requirement (pyproject.toml)
    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    args = ["protoc", f"-I{ROOT / 'protos'}", f"-I{include}",
            f"--python_out={ROOT}", f"--pyi_out={ROOT}", f"--grpc_python_out={ROOT}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on " + ", ".join(sources))


class BuildWithProtos(build_py):
    def run(self):
        compile_protos()
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
