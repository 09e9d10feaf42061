"""Session fixtures: the demo models trained on sklearn's bundled digits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from crossinfer.demo import DemoModels, digits, train_demo_models

logging.getLogger("apache_beam").setLevel(logging.WARNING)

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> DemoModels:
    return train_demo_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    return digits()
