"""What a spec may load: allowed import paths, allowed model locations, pins.

A spec never carries code. The only classes it can name are import paths
(``package.module:Name``) matched against ``allowed_classes``; the only files it
can load are under ``model_roots`` (when set). Python pipelines get a permissive
default (any location, crossinfer's own model classes); the expansion service
builds a strict one from its flags.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

#: Classes shipped with crossinfer that any spec may name.
BUILTIN_CLASSES = ("crossinfer.models:*",)


@dataclass(frozen=True)
class LoadPolicy:
    """Rules for what a spec may load.

    ``allowed_classes``: glob patterns over ``module:Name`` import paths.
    ``model_roots``: directories or URI prefixes models must live under;
    ``None`` allows any location (Python pipelines), ``()`` allows none.
    ``require_sha256``: refuse models without a pinned checksum.
    ``check_files``: check at validation time that local model files exist.
    """

    allowed_classes: tuple[str, ...] = BUILTIN_CLASSES
    model_roots: tuple[str, ...] | None = None
    require_sha256: bool = False
    check_files: bool = True

    def class_allowed(self, import_path: str) -> bool:
        return any(fnmatch.fnmatchcase(import_path, pattern) for pattern in self.allowed_classes)

    def location_problem(self, uri: str) -> str | None:
        """Why ``uri`` may not be loaded, or None when it may."""
        if self.model_roots is None:
            return None
        if is_local(uri):
            real = os.path.realpath(local_path(uri))
            for root in self.model_roots:
                if is_local(root):
                    root_real = os.path.realpath(local_path(root))
                    if os.path.commonpath([real, root_real]) == root_real:
                        return None
        else:
            for root in self.model_roots:
                if not is_local(root) and uri.startswith(root.rstrip("/") + "/"):
                    return None
        roots = ", ".join(self.model_roots) or "none configured"
        return f"{uri!r} is outside the allowed model roots ({roots})"


def is_local(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path(uri: str) -> str:
    return urlparse(uri).path if uri.startswith("file://") else uri


def import_object(import_path: str) -> Any:
    """Import ``package.module:Name`` (``package.module.Name`` is accepted too)."""
    if ":" in import_path:
        module_name, _, attr = import_path.partition(":")
    else:
        module_name, _, attr = import_path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{import_path!r} is not an import path like 'package.module:Name'")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
