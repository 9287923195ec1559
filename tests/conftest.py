import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    env = os.environ.get("REFERDINO_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures" / "official"


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    d = fixtures_dir()
    if not d.is_dir():
        pytest.fail(f"official fixtures not found at {d}; set REFERDINO_FIXTURES to the folder with caseA.npz")
    return d


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A folder holding a randomly initialised tiny model (config.json + model.safetensors)."""
    from referdino import ReferDino, get_preset

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    ReferDino(get_preset("tiny")).save_pretrained(str(path))
    return path
