"""Build script: setuptools, so the package builds from source on every Python it
supports (3.6-3.13); pyproject.toml asks for ``setuptools>=40.8`` only, and pip
picks the newest setuptools the building interpreter runs.

Besides the ``keepalive_guard`` package, the wheel's root holds the start-up
hook: ``keepalive_guard.pth`` (copied into the build by ``build_py`` below, as
pytest-cov ships its .pth) and the two top-level modules it imports.
"""

import os
import re
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PTH = "keepalive_guard.pth"


def read(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as handle:
        return handle.read()


def version():
    """``__version__`` from the package's ``__init__.py``, read, not imported."""
    match = re.search(r'^__version__ = "([^"]+)"', read("keepalive_guard/__init__.py"), re.M)
    if match is None:
        raise RuntimeError("no __version__ in keepalive_guard/__init__.py")
    return match.group(1)


class BuildWithPth(build_py):
    """build_py that also puts keepalive_guard.pth at the root of the build.

    It starts from an empty build directory: setuptools reuses ``build/lib``
    between builds, so a module deleted from the source would otherwise stay
    in every later wheel.
    """

    def run(self):
        if os.path.isdir(self.build_lib):
            shutil.rmtree(self.build_lib)
        build_py.run(self)
        target = os.path.join(self.build_lib, PTH)
        self.mkpath(self.build_lib)
        shutil.copyfile(os.path.join(HERE, PTH), target)

    def get_outputs(self, include_bytecode=1):
        return build_py.get_outputs(self, include_bytecode) + [os.path.join(self.build_lib, PTH)]


setup(
    name="keepalive-guard",
    version=version(),
    description=(
        "Backports uvicorn's keep-alive and disconnect fixes to pinned uvicorn releases, "
        "without upgrading uvicorn."
    ),
    long_description=read("README.md"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.6",
    packages=find_packages(include=["keepalive_guard", "keepalive_guard.*"]),
    package_data={"keepalive_guard": ["fingerprints.txt"]},
    py_modules=["_keepalive_guard_boot", "_keepalive_guard_hook"],
    install_requires=["packaging>=20.9", "wrapt>=1.14,<3"],
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": ["keepalive-guard = keepalive_guard.cli:main"]},
    cmdclass={"build_py": BuildWithPth},
    zip_safe=False,
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: AsyncIO",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.6",
        "Programming Language :: Python :: 3.7",
        "Programming Language :: Python :: 3.8",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
    ],
)
