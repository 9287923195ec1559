"""referdino: ReferDINO referring video object segmentation in pure PyTorch.

Public API::

    from referdino import ReferDino, ReferDinoConfig, get_preset, tokenize
"""

from .config import PRESETS, ReferDinoConfig, get_preset
from .modeling.referdino import ReferDino
from .processing.text import tokenize

ReferDINO = ReferDino  # the paper's spelling

__version__ = "0.1.0"
__all__ = ["PRESETS", "ReferDINO", "ReferDino", "ReferDinoConfig", "get_preset", "tokenize", "__version__"]
