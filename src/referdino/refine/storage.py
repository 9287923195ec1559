"""Bounded-memory storage for the refinement: frames on disk, masks at one bit per pixel.

SAM2 needs random access to the frames (it propagates forward from the first prompt, then in reverse from the
last), while `referdino segment` reads a video once, in order. `FrameStore` records the frames as they stream past
(uint8 RGB in a temporary file, memory-mapped), so nothing is decoded twice and RAM does not grow with the video.
`PackedMasks` keeps (N, H, W) boolean masks per frame packed 8 pixels to a byte (29 KB per object for a 360x640
frame).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator

import numpy as np


class FrameStore:
    """Frames (H, W, 3) uint8 of one size, appended in order, read back by index from a temporary file.

    `len(store)`, `store[t]`; `record(frames)` passes (name, frame) pairs through while appending them.
    `close()` deletes the file (also a context manager)."""

    def __init__(self, directory: str | None = None) -> None:
        self._file = tempfile.NamedTemporaryFile(prefix="referdino-frames-", suffix=".u8", dir=directory,
                                                 delete=True)
        self.shape: tuple[int, int, int] | None = None
        self.count = 0
        self._map: np.memmap | None = None

    def append(self, frame: np.ndarray) -> None:
        a = np.ascontiguousarray(frame, dtype=np.uint8)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"frames must be H x W x 3 uint8, got shape {a.shape}")
        if self.shape is None:
            self.shape = a.shape  # type: ignore[assignment]
        elif a.shape != self.shape:
            raise ValueError(f"frame {self.count} is {a.shape[1]}x{a.shape[0]}, the first frame "
                             f"{self.shape[1]}x{self.shape[0]}: every frame of a video must have one size")
        self._file.write(a.tobytes())
        self.count += 1
        self._map = None

    def record(self, frames: Iterable[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
        for name, frame in frames:
            self.append(frame)
            yield name, frame

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= t < self.count:
            raise IndexError(t)
        if self._map is None:
            self._file.flush()
            assert self.shape is not None
            self._map = np.memmap(self._file.name, dtype=np.uint8, mode="r", shape=(self.count, *self.shape))
        return np.array(self._map[t])

    def close(self) -> None:
        self._map = None
        self._file.close()

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PackedMasks:
    """(num_frames, num_objects, H, W) boolean masks, stored per frame at one bit per pixel. A frame never set
    reads as all False. `masks[t]` -> (N, H, W) bool, `masks.union(t)` -> (H, W) bool."""

    def __init__(self, num_frames: int, num_objects: int, size: tuple[int, int]) -> None:
        self.num_frames = num_frames
        self.num_objects = num_objects
        self.size = (int(size[0]), int(size[1]))
        self._frames: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_frames

    def set(self, t: int, masks: np.ndarray) -> None:
        m = np.asarray(masks, dtype=bool)
        if m.shape != (self.num_objects, *self.size):
            raise ValueError(f"expected masks of shape {(self.num_objects, *self.size)}, got {m.shape}")
        if not 0 <= t < self.num_frames:
            raise IndexError(t)
        self._frames[t] = np.packbits(m.reshape(self.num_objects, -1), axis=1)

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= t < self.num_frames:
            raise IndexError(t)
        h, w = self.size
        packed = self._frames.get(t)
        if packed is None:
            return np.zeros((self.num_objects, h, w), bool)
        return np.unpackbits(packed, axis=1, count=h * w).astype(bool).reshape(self.num_objects, h, w)

    def union(self, t: int) -> np.ndarray:
        return self[t].any(0)

    def filled(self) -> list[int]:
        """The frames that were set, in order."""
        return sorted(self._frames)

    def to_array(self) -> np.ndarray:
        return np.stack([self[t] for t in range(self.num_frames)]) if self.num_frames else \
            np.zeros((0, self.num_objects, *self.size), bool)
