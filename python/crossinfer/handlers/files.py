"""Model files: opened once, safely, and read from that one descriptor.

Every local model file crossinfer reads - to check it where a pipeline is
constructed (the expansion service, or a Python program) and to load it on a
worker - is opened here, because anyone who can write under a model root can
race the reader (docs/security.md):

* ``O_NOFOLLOW | O_NONBLOCK``: a final symlink is refused, and a FIFO or device
  renamed over the file never blocks the open;
* then ``fstat`` on the descriptor: only a regular file is read (a FIFO would
  block the read for ever, ``/dev/zero`` would never end);
* then the path the descriptor really names (``/proc/self/fd/N``) must be the
  location that was checked against the model roots: a directory on the path
  swapped for a symlink between the check and the open is refused;
* the SHA-256, the skops type check and the load all use bytes read from that
  descriptor; nothing is opened again by path.

:func:`file_problems` is the one check of a spec's model files before they
are loaded (pins, and the types a skops file names), used by the expansion
service (Python pipelines built directly leave it to the workers, whose load
checks the same); :func:`read_model` is the worker's read.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO, Any

from crossinfer.errors import CrossinferError
from crossinfer.policy import LoadPolicy, is_local
from crossinfer.spec.nodes import ModelNode

#: Largest ``schema.json`` read from a skops file (it lists the file's objects;
#: a zip can claim a small file and inflate it without end).
MAX_SKOPS_SCHEMA_BYTES = 64 << 20
#: Facts kept about model files (each a digest and a few names).
_CACHE_ENTRIES = 1024


class FileRefused(CrossinferError, OSError):
    """A model file cannot be read safely; the message says why."""


def open_file(location: str) -> tuple[IO[bytes], os.stat_result]:
    """The local file at ``location`` (an absolute, resolved path), opened for
    reading, and its ``fstat``; FileRefused unless it is a regular file reached
    without following any symlink (see the module docstring)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(location, flags)
    except OSError as exc:
        if os.path.islink(location):
            raise FileRefused(f"{location!r} is a symbolic link; refusing it (model locations "
                              "are resolved once, when the pipeline is constructed)") from exc
        raise FileRefused(f"cannot open {location!r}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{location!r} is not a regular file ({_kind(st.st_mode)}); "
                              "refusing it")
        opened = _opened_path(fd)
        if opened is not None and opened != location:
            raise FileRefused(f"{location!r} was opened as {opened!r} (a directory on its path "
                              "changed since it was checked); refusing it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def _opened_path(fd: int) -> str | None:
    """The path the kernel says ``fd`` names, where it says (Linux); else None."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def read_model(location: str, expected_sha256: str | None) -> bytes:
    """The bytes of the model file at ``location`` (a local path, or any Beam
    FileSystems URI); FileRefused, or ValueError when a pinned SHA-256 differs."""
    if is_local(location):
        f, _ = open_file(location)
        with f:
            data = f.read()
    else:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(location) as remote:
            data = remote.read()
    if expected_sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise ValueError(f"the SHA-256 of {location!r} is {actual}, but the spec pins "
                             f"{expected_sha256}; refusing to load it (the file changed or "
                             "the pin is wrong)")
    return data


# ------------------------------------------------------------------ skops


def skops_schema_problem(archive: zipfile.ZipFile) -> str | None:
    """Why a skops archive's ``schema.json`` will not be read, or None."""
    try:
        size = archive.getinfo("schema.json").file_size
    except KeyError:
        return "not a skops file (no schema.json)"
    if size > MAX_SKOPS_SCHEMA_BYTES:
        return (f"its schema.json is {size:,} bytes; at most {MAX_SKOPS_SCHEMA_BYTES:,} are "
                "read")
    return None


def skops_untrusted(source: bytes | IO[bytes], trusted: tuple[str, ...] = ()) -> list[str]:
    """The types a skops file names that neither skops' defaults nor ``trusted``
    trust (nothing is constructed); ValueError when it is not a readable skops file."""
    import skops.io

    content = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with zipfile.ZipFile(content) as archive:
            problem = skops_schema_problem(archive)
        if problem:
            raise ValueError(problem)
        content.seek(0)
        # skops opens what it is given with ZipFile, which takes a file object.
        untrusted = skops.io.get_untrusted_types(file=content)
    except ValueError:
        raise
    except Exception as exc:  # not a zip, or a malformed schema
        raise ValueError(f"not a readable skops file: {type(exc).__name__}: {exc}") from exc
    return [t for t in untrusted if t not in trusted]


def skops_class(archive: zipfile.ZipFile) -> tuple[str, str] | None:
    """(module, name) of the object a skops archive holds, from its ``schema.json``
    (nothing is loaded); None when it does not say."""
    import json

    try:
        if skops_schema_problem(archive):
            return None
        schema = json.loads(archive.read("schema.json"))
        module, name = schema["__module__"], schema["__class__"]
    except Exception:  # another layout: cannot tell
        return None
    return (module, name) if isinstance(module, str) and isinstance(name, str) else None


# ------------------------------------------------------------------ construction checks


@dataclass(frozen=True)
class FileFacts:
    """What construction needs to know of a local model file, read from one open."""

    sha256: str
    #: skops files: the types outside skops' defaults (before the policy's extra
    #: trusted types), or why the file is not a readable skops file.
    skops_untrusted: tuple[str, ...] = ()
    skops_error: str | None = None
    #: The (module, name) of the object the file builds, where it says.
    built_class: tuple[str, str] | None = None


_lock = threading.Lock()
_facts: OrderedDict[tuple[Any, ...], FileFacts] = OrderedDict()


def inspect_file(location: str, fmt: str | None) -> FileFacts:
    """The facts of the local model file at ``location`` (read in chunks from one
    descriptor; remembered per file identity, size and times); FileRefused."""
    f, st = open_file(location)
    with f:
        key = (location, fmt, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with _lock:
            if key in _facts:
                _facts.move_to_end(key)
                return _facts[key]
        sha = hashlib.sha256()
        while chunk := f.read(1 << 20):
            sha.update(chunk)
        untrusted: tuple[str, ...] = ()
        error = built = None
        if fmt == "skops":
            f.seek(0)
            try:
                untrusted = tuple(skops_untrusted(f))
                f.seek(0)
                with zipfile.ZipFile(f) as archive:
                    built = skops_class(archive)
            except (ValueError, zipfile.BadZipFile) as exc:
                error = str(exc)
        elif fmt in ("pickle", "joblib"):
            f.seek(0)
            built = pickled_class(f)
        facts = FileFacts(sha.hexdigest(), untrusted, error, built)
    with _lock:
        _facts[key] = facts
        while len(_facts) > _CACHE_ENTRIES:
            _facts.popitem(last=False)
    return facts


def file_problems(node: ModelNode, policy: LoadPolicy) -> list[tuple[str, str]]:
    """(field, message) for each problem of the node's local model file that can be
    told without loading it: a pinned SHA-256 that differs, a skops file naming
    types the policy does not trust, a file that cannot be read safely. [] for
    remote files (their workers check) and when ``policy.check_files`` is off."""
    if not (policy.check_files and node.uri):
        return []
    try:
        location = policy.resolve_location(node.uri)
    except ValueError:
        return []  # reported by spec validation, naming the field
    if not is_local(location) or not os.path.lexists(location):
        return []  # remote files are checked by the workers; a missing one by validation
    fmt = node.resolved_format
    if not (node.sha256 or fmt == "skops"):
        return []
    try:
        facts = inspect_file(location, fmt)
    except FileRefused as exc:
        return [("uri", str(exc))]
    problems = []
    if node.sha256 and facts.sha256 != node.sha256:
        problems.append(("sha256", f"the file {node.uri!r} has SHA-256 {facts.sha256}, but the "
                                   f"spec pins {node.sha256}; refusing it (the file changed or "
                                   "the pin is wrong)"))
    if fmt == "skops":
        if facts.skops_error:
            problems.append(("uri", f"{node.uri!r} is {facts.skops_error}"))
        untrusted = [t for t in facts.skops_untrusted if t not in policy.skops_trusted]
        if untrusted:
            problems.append(("uri", f"the skops file {node.uri!r} {untrusted_text(untrusted)}"))
    return problems


def untrusted_text(untrusted: list[str]) -> str:
    """'names types outside ... (a, b ...); refusing it' for a refusal message."""
    shown = ", ".join(untrusted[:5]) + (" ..." if len(untrusted) > 5 else "")
    return (f"names types outside skops' trusted defaults and the policy's trusted types "
            f"({shown}); refusing it (an operator can trust listed types: service "
            "--skops-trust TYPE, Python LoadPolicy(skops_trusted=(...)))")


# ------------------------------------------------------------------ pickles


#: Pickle opcodes read at most to find the class a file builds.
_PEEK_OPCODES = 64


def pickled_class(f: IO[bytes]) -> tuple[str, str] | None:
    """(module, name) of the class a pickle (or uncompressed joblib) stream builds
    first, read from its opcodes without unpickling it; None when the first
    opcodes do not say (not a pickle, compressed, or another layout)."""
    import pickletools

    strings: list[str] = []
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(f)):
            if count >= _PEEK_OPCODES:
                return None
            if op.name == "GLOBAL" and isinstance(arg, str):
                module, _, name = arg.partition(" ")
                return module, name
            if op.name == "STACK_GLOBAL":
                return (strings[-2], strings[-1]) if len(strings) >= 2 else None
            if isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
    except Exception:  # not a pickle stream: cannot tell
        return None
    return None
