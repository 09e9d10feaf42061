"""Model files that run a command when loaded, for the attack tests.

Each writer makes a file whose loading runs ``touch MARKER`` (through
``os.system``, as an attacker's would), so a test can prove that nothing ran
(the marker never appears) - and, as a positive control, that loading it where
the policy allows the format does create the marker.
"""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path
from typing import Any


class RunsCommand:
    """Unpickling this runs ``command`` in a shell."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def touch(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def evil_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(RunsCommand(touch(marker))))
    return path


def evil_joblib(path: Path, marker: Path) -> Path:
    import joblib

    joblib.dump(RunsCommand(touch(marker)), path)
    return path


def evil_state_dict(path: Path, marker: Path) -> Path:
    """A torch.save file whose pickle calls os.system (weights_only refuses it)."""
    import torch

    torch.save({"net.0.weight": RunsCommand(touch(marker))}, path)
    return path


def evil_skops(path: Path, marker: Path) -> Path:
    """A skops file naming a type skops does not trust."""
    import skops.io

    skops.io.dump({"estimator": RunsCommand(touch(marker))}, path)
    return path


WRITERS = {"pickle": evil_pickle, "joblib": evil_joblib, "state_dict": evil_state_dict,
           "skops": evil_skops}
