"""The package's shape: modules import in any order, one exception base.

* Every public module imports first in a fresh interpreter: no import cycle
  hides behind the package's own import order (``crossinfer.processing.ops``
  imported first once raised "partially initialized module").
* Every exception crossinfer raises on purpose derives from
  :class:`crossinfer.errors.CrossinferError` and keeps the standard base that
  code written before it catches (``ValueError`` for bad input, ...).
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import crossinfer
from crossinfer.errors import CrossinferError

PACKAGE = Path(crossinfer.__file__).parent


def _public_modules() -> list[str]:
    names = ["crossinfer"]
    for info in pkgutil.walk_packages([str(PACKAGE)], "crossinfer."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


MODULES = _public_modules()

#: Each child imports one module into an interpreter that has imported no
#: crossinfer module. The third-party modules they use are imported once before
#: the forks (listed by a first child that imports everything): they cannot hide
#: a cycle of ours, and importing Beam and PyTorch 70 times over would be slow.
_CHILD = textwrap.dedent("""
    import importlib, os, sys, tempfile, traceback
    ours = lambda name: name.split(".")[0] == "crossinfer"
    listing = tempfile.mktemp()
    pid = os.fork()
    if pid == 0:
        for name in sys.argv[1:]:
            __import__(name)
        with open(listing, "w") as f:
            f.write("\\n".join(m for m in list(sys.modules) if not ours(m)))
        os._exit(0)
    os.waitpid(pid, 0)
    with open(listing) as f:
        for name in f.read().split():
            try:
                importlib.import_module(name)
            except BaseException:
                pass  # a submodule that only imports as part of its parent
    os.unlink(listing)
    assert not [m for m in sys.modules if ours(m)]
    failed = []
    for name in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:
            try:
                __import__(name)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            failed.append(name)
    print("FAILED:" + ",".join(failed))
""")


def test_the_package_has_the_modules_it_is_checked_for() -> None:
    assert {"crossinfer.processing.ops", "crossinfer.spec.nodes", "crossinfer.spec.schema",
            "crossinfer.expansion.servicer", "crossinfer.patterns.transforms"} <= set(MODULES)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork (POSIX)")
def test_every_public_module_imports_first_in_a_fresh_interpreter() -> None:
    done = subprocess.run([sys.executable, "-c", _CHILD, *MODULES], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last == "FAILED:", f"{last}\n{done.stderr[-4000:]}"


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in MODULES:
        if name in ("crossinfer.expansion.__main__",):
            continue
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) \
                    and value.__module__.split(".")[0] == "crossinfer":
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[key] for key in sorted(found)]


EXCEPTIONS = _exception_classes()


def test_crossinfer_defines_the_exceptions_it_is_checked_for() -> None:
    names = {cls.__name__ for cls in EXCEPTIONS}
    assert {"SpecError", "ClassRefused", "LocationRefused", "ModelLoadError", "PayloadError",
            "RequestRefused", "Busy", "TimedOut", "ReportSettingsError"} <= names, names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_exception_of_crossinfer_derives_from_one_base(cls: type) -> None:
    assert issubclass(cls, CrossinferError)


@pytest.mark.parametrize(("name", "base"), [
    ("crossinfer.spec.SpecError", ValueError),
    ("crossinfer.policy.ClassRefused", ValueError),
    ("crossinfer.policy.LocationRefused", ValueError),
    ("crossinfer.handlers.adapter.ModelLoadError", RuntimeError),
    ("crossinfer.expansion.payload.PayloadError", ValueError),
    ("crossinfer.expansion.security.RequestRefused", ValueError),
    ("crossinfer.expansion.schemas.InputSchemaError", ValueError),
    ("crossinfer.expansion.environments.EnvironmentConfigError", ValueError),
    ("crossinfer.experiments.settings.ReportSettingsError", ValueError),
])
def test_exceptions_keep_the_standard_base_users_catch(name: str, base: type) -> None:
    module, _, attr = name.rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), attr), base)
