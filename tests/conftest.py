import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption(
        "--device", default="cpu",
        help="torch device for the device-meaningful tests (those taking the `device` fixture), e.g. cuda; "
             "the rest of the suite runs on the CPU whatever this says",
    )


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The `--device` of this run (default cpu); skips the test when it names CUDA and none is available."""
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda: no CUDA device is available")
    return dev


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
