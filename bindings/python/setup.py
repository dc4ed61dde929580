"""Copies the built shared library (librwkvlite.so) into the package when it is installed, from $RWKVL_LIBRARY or
the repository's build folder; without one the installed package looks for it at import (see _capi.py)."""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def find_library():
    env = os.environ.get("RWKVL_LIBRARY")
    if env and os.path.exists(env):
        return env
    for build in ("build", "build-release", "build-isa"):
        p = os.path.join(HERE, "..", "..", build, "librwkvlite.so")
        if os.path.exists(p):
            return p
    return None


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        lib = find_library()
        if lib:
            shutil.copy2(lib, os.path.join(self.build_lib, "rwkv_lite", "librwkvlite.so"))


setup(cmdclass={"build_py": BuildWithLibrary})
