"""Random smooth masks and COCO RLE shared by the comparison scripts (run them from any folder: the script's
own folder is on sys.path)."""

import numpy as np
from pycocotools import mask as cocomask
from scipy import ndimage


def blob(rng: np.random.Generator, h: int, w: int, density: float, sigma: tuple[float, float],
         level: tuple[float, float]) -> np.ndarray:
    """Blurred random dots thresholded: smooth blobs. Draws: the dots, then the blur, then the threshold."""
    dots = (rng.random((h, w)) < density).astype(float)
    return ndimage.gaussian_filter(dots, rng.uniform(*sigma)) > rng.uniform(*level)


def rle(mask: np.ndarray) -> dict:
    """COCO RLE with a str `counts`, as the benchmark JSON files hold it."""
    r = cocomask.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r
