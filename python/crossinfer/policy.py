"""What a spec may load: allowed classes, allowed model locations and formats, pins.

A spec never carries code. The only classes it can name are ``module:Name``
import paths that resolve to one class object defined in an allow-listed
module; the only files it can load are under ``model_roots`` (when set), in a
format that cannot run code unless the policy opts in to it
(``code_formats``). Python pipelines get a default policy (any location,
crossinfer's own model classes, data-only formats); the expansion service
builds a strict one from its flags. The policy is pickled into every handler,
so workers apply the same rules again when they load.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from crossinfer.errors import CrossinferError

#: Classes shipped with crossinfer that any spec may name.
BUILTIN_CLASSES = ("crossinfer.models:*",)

#: Formats whose loading (or running) can execute whatever the file's author
#: wrote, and why. A sha256 pin proves a file is unchanged, not that it is safe:
#: allowing one of these lets every writer of the model roots run code in the
#: workers.
CODE_FORMATS: Mapping[str, str] = {
    "pickle": "unpickling runs any function the file names",
    "joblib": "joblib files are pickles: loading runs any function the file names",
    "torchscript": "a TorchScript file is a program: its code runs in the worker, and its "
                   "ops can read files",
    "engine": "a TensorRT engine can embed plugin libraries (native code) that load with it",
}

#: A dotted module name, and one identifier.
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")
#: A URI scheme (RFC 3986), as in ``gs://``.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class ClassRefused(CrossinferError, ValueError):
    """A named class is not allowed, cannot be imported, or is not what it must be."""


class LocationRefused(CrossinferError, ValueError):
    """A model URI is malformed or outside the allowed roots."""


def parse_class_pattern(pattern: str) -> tuple[str, str]:
    """``'pkg.mod:Name'`` or ``'pkg.mod:*'`` -> (module, name); ValueError otherwise.

    ``*`` stands for one class name of that module (never a dotted path), so a
    pattern can only ever allow top-level classes of the module it names.
    """
    module, sep, name = pattern.partition(":")
    if not sep or not _MODULE.match(module) or not (name == "*" or _IDENTIFIER.match(name)):
        raise ValueError(f"{pattern!r} is not a class pattern: name the module and a class, as "
                         "in 'package.module:ClassName' or 'package.module:*' (no wildcards "
                         "in the module)")
    return module, name


def parse_type_name(name: str) -> str:
    """A type name as skops spells it (``package.module.Name``); ValueError otherwise."""
    if not isinstance(name, str) or "." not in name or not _MODULE.match(name):
        raise ValueError(f"skops_trusted: {name!r} is not a type name like "
                         "'sklearn.tree._tree.Tree' (the module's dotted path, then the name)")
    return name


def parse_import_path(import_path: str) -> tuple[str, str]:
    """``'pkg.mod:Name'`` -> (module, name); ClassRefused unless exactly that form."""
    module, sep, name = import_path.partition(":")
    if not sep or not _MODULE.match(module) or not _IDENTIFIER.match(name):
        raise ClassRefused(f"{import_path!r} is not an import path like 'package.module:Name' "
                           "(one class name after the colon, no dotted attributes)")
    return module, name


@dataclass(frozen=True)
class LoadPolicy:
    """Rules for what a spec may load.

    ``allowed_classes``: ``module:Name`` or ``module:*`` patterns; a spec's
    class must be a class *defined* in that module (``cls.__module__``).
    ``model_roots``: directories or URI prefixes models must live under;
    ``None`` allows any location (Python pipelines), ``()`` allows none.
    ``code_formats``: formats of :data:`CODE_FORMATS` allowed anyway.
    ``require_sha256``: refuse models without a pinned checksum.
    ``check_files``: check where the pipeline is constructed that local model
    files exist, match their pins and (skops) name only trusted types, and that
    named classes import (off only for spec-only tooling).
    ``skops_trusted``: types a skops file may name besides skops' defaults, as
    skops spells them (``sklearn.tree._tree.Tree``); skops constructs them when
    it loads, so each is trusted like an allow-listed class.

    Raises ValueError for a malformed pattern, an unknown format name or a
    malformed type name.
    """

    allowed_classes: tuple[str, ...] = BUILTIN_CLASSES
    model_roots: tuple[str, ...] | None = None
    require_sha256: bool = False
    check_files: bool = True
    code_formats: tuple[str, ...] = ()
    skops_trusted: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for pattern in self.allowed_classes:
            parse_class_pattern(pattern)
        unknown = sorted(set(self.code_formats) - set(CODE_FORMATS))
        if unknown:
            raise ValueError(f"code_formats: {unknown[0]!r} is not a code-capable format "
                             f"(those are {', '.join(CODE_FORMATS)})")
        for name in self.skops_trusted:
            parse_type_name(name)

    # ---------------------------------------------------------------- classes

    def class_allowed(self, import_path: str) -> bool:
        """Whether ``import_path`` names a class the patterns allow (text only)."""
        try:
            module, name = parse_import_path(import_path)
        except ClassRefused:
            return False
        for pattern in self.allowed_classes:
            p_module, p_name = parse_class_pattern(pattern)
            if p_module == module and p_name in ("*", name):
                return True
        return False

    def resolve_class(self, import_path: str, base: type) -> type:
        """The allow-listed class ``import_path`` names, a subclass of ``base``.

        Only the named module's own namespace is read (no attribute walking),
        and the object must be a class defined in that module. Raises
        ClassRefused with a sentence saying which rule failed.
        """
        module_name, name = parse_import_path(import_path)
        if not self.class_allowed(import_path):
            allowed = ", ".join(self.allowed_classes) or "none"
            raise ClassRefused(f"{import_path!r} is not in the allow-list of importable classes "
                               f"(allowed: {allowed})")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # ImportError, or the module's own code failing
            raise ClassRefused(f"cannot import module {module_name!r}: "
                               f"{type(exc).__name__}: {exc}") from exc
        obj = vars(module).get(name)
        if not isinstance(obj, type):
            found = "nothing" if obj is None else f"a {type(obj).__name__}"
            raise ClassRefused(f"{import_path!r} is not a class (the module holds {found} under "
                               f"that name)")
        if obj.__module__ != module_name or obj.__qualname__ != name:
            raise ClassRefused(f"{import_path!r} is {obj.__module__}.{obj.__qualname__}, "
                               f"defined outside {module_name!r}; name the class where it is "
                               "defined")
        if not issubclass(obj, base):
            raise ClassRefused(f"{import_path!r} is not a subclass of "
                               f"{base.__module__}.{base.__qualname__}")
        return obj

    # ---------------------------------------------------------------- formats

    def format_problem(self, fmt: str | None) -> str | None:
        """Why files of ``fmt`` may not be loaded, or None when they may."""
        if fmt is not None and fmt in CODE_FORMATS and fmt not in self.code_formats:
            return (f"format {fmt!r} can run code when loaded ({CODE_FORMATS[fmt]}); it is "
                    "refused unless allowed explicitly (service: --allow-code-format "
                    f"{fmt}; Python: LoadPolicy(code_formats=({fmt!r},))), which lets every "
                    "writer of the model roots run code")
        return None

    # ---------------------------------------------------------------- locations

    def resolve_location(self, uri: str) -> str:
        """The one normalised form of ``uri`` that is checked and then opened.

        Local paths (``file://`` URIs included) become absolute, with symlinks
        and ``..`` resolved - relative paths against the current directory of
        the process that constructs the pipeline (the service, or the Python
        program), never a worker's; remote URIs are returned as given once
        they hold no ``.``/``..`` segments. Raises LocationRefused when the
        URI is malformed or outside ``model_roots``.
        """
        path = normalize_uri(uri)
        if is_local(path):
            path = os.path.realpath(path)
        if self.model_roots is None:
            return path
        for root in self.model_roots:
            if is_local(root) and is_local(path):
                root_real = os.path.realpath(normalize_uri(root))
                if os.path.commonpath([path, root_real]) == root_real:
                    return path
            elif not is_local(root) and not is_local(path) and \
                    path.startswith(root.rstrip("/") + "/"):
                return path
        roots = ", ".join(self.model_roots) or "none configured"
        # Only the URI's own lexical form is shown, never where symlinks lead: a
        # refusal must not tell a client what /proc/self/exe, the working directory,
        # a descriptor or a symlink points to.
        lexical = os.path.abspath(normalize_uri(uri)) if is_local(path) else path
        where = "" if lexical == uri else f" (that is {lexical!r})"
        if is_local(path) and self._under_a_root(lexical):
            where += " (a symbolic link on its path leads outside them)"
        hint = ""
        if is_local(path) and is_local(uri) and not uri.startswith(("/", "file:")):
            hint = ("; a relative path resolves against the working directory of the process "
                    f"that constructs the pipeline ({os.getcwd()}), not against a model root: "
                    "give the full path")
        raise LocationRefused(f"{uri!r} is outside the allowed model roots ({roots}){where}"
                              f"{hint}")

    def _under_a_root(self, path: str) -> bool:
        """Whether the local ``path`` lies, lexically, under a local model root."""
        return any(is_local(root) and os.path.commonpath(
            [path, os.path.abspath(normalize_uri(root))]) == os.path.abspath(normalize_uri(root))
            for root in self.model_roots or ())

    def location_problem(self, uri: str) -> str | None:
        """Why ``uri`` may not be loaded, or None when it may."""
        try:
            self.resolve_location(uri)
        except LocationRefused as exc:
            return str(exc)
        return None


def normalize_uri(uri: str) -> str:
    """A local path for local URIs (``file:///x`` -> ``/x``), the URI for remote ones.

    Raises LocationRefused for control characters (a NUL would truncate the
    path in C) and lone surrogates, over-long URIs, ``file://`` URIs naming
    another host, and remote URIs without a bucket or with ``.``/``..``
    segments (object stores take them literally, other file systems do not).
    """
    from crossinfer.spec.limits import DERIVED_BOUNDS  # the spec package imports this module

    longest = DERIVED_BOUNDS["model.uri (length)"].maximum
    if not uri:
        raise LocationRefused("an empty URI")
    if len(uri) > longest:  # a spec's URI is bounded by its declaration too; other URIs are not
        raise LocationRefused(f"longer than {longest} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        raise LocationRefused(f"{uri!r} contains a control character")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in uri):
        raise LocationRefused(f"{uri!a} contains a lone surrogate, which no file system "
                              "path can hold")
    if uri[:5].lower() == "file:":
        try:
            parsed = urlparse(uri)
        except ValueError as exc:
            raise LocationRefused(f"{uri!r} is not a URI ({exc})") from exc
        if parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
            raise LocationRefused(f"{uri!r}: file URIs must be file:///absolute/path")
        path = unquote(parsed.path)
        if not path.startswith("/") or any(ord(c) < 0x20 for c in path):
            raise LocationRefused(f"{uri!r}: file URIs must be file:///absolute/path")
        return path
    if is_local(uri):
        return uri
    rest = uri.partition("://")[2]
    if not rest or not rest.split("/")[0] or any(seg in (".", "..")
                                                 for seg in rest.split("/")[1:]):
        raise LocationRefused(f"{uri!r} is not a URI like 'scheme://bucket/path' (a bucket, "
                              "then a path without '.' or '..' segments)")
    return uri


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a local path (or a ``file:`` URI)."""
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else ""
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path(uri: str) -> str:
    """The path of a local URI (``file:///x`` -> ``/x``)."""
    return normalize_uri(uri)


def torch_module_base() -> type:
    """``torch.nn.Module``: what a ``model_class`` must subclass."""
    from torch import nn

    return nn.Module


def model_handler_base() -> type:
    """Beam's ``ModelHandler``: what a ``handler_class`` must subclass."""
    from apache_beam.ml.inference.base import ModelHandler

    return ModelHandler


def describe_policy(policy: LoadPolicy) -> dict[str, Any]:
    """The policy as plain values, for the service's startup log line."""
    return {"model roots": ", ".join(policy.model_roots or ()) or "any",
            "allowed classes": ", ".join(policy.allowed_classes) or "none",
            "code formats": ", ".join(policy.code_formats) or "none",
            "extra skops types": ", ".join(policy.skops_trusted) or "none",
            "require sha256": policy.require_sha256}
