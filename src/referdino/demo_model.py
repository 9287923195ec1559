"""The small model that ships inside the package (trained on the synthetic world by `referdino train`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def demo_model_path() -> Path | None:
    """Folder of the embedded demo model, or None if this install has none."""
    root = resources.files("referdino").joinpath("assets", "demo_model")
    path = Path(str(root))
    return path if (path / "model.safetensors").is_file() and (path / "config.json").is_file() else None
