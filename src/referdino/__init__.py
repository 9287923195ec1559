"""referdino: ReferDINO referring video object segmentation in pure PyTorch.

Public API::

    from referdino import ReferDino, ReferDinoConfig, Segmenter, get_preset, tokenize

    segmenter = Segmenter.from_pretrained("ryt_mevis_swinb")        # model + device + dtype
    result = segmenter.segment("clip.mp4", ["the cat wagging its tail"])
"""

from .config import PRESETS, ReferDinoConfig, get_preset
from .inference.segmenter import Segmenter
from .modeling.referdino import ReferDino
from .processing.text import tokenize

ReferDINO = ReferDino  # the paper's spelling

__version__ = "0.1.0"
__all__ = ["PRESETS", "ReferDINO", "ReferDino", "ReferDinoConfig", "Segmenter", "get_preset", "tokenize",
           "__version__"]
