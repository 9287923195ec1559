"""Output folders: referdino never deletes or overwrites what it did not write.

Every folder a command writes into holds `.referdino.json`, the top-level entries referdino wrote there and the
kind of output each is ("segment", "infer", "model", "synth", "train"). A command writes into a new folder, an
empty one, or one that holds only referdino's outputs, and replaces only entries of its own kind. Anything else
is the user's: such a folder is refused unless `overwrite=True` (`--overwrite`), and even then the user's
entries are kept, and a name the command needs that one of them holds is refused. Folders written before the
marker existed are recognised by their layout (`_legacy`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

MARKER = ".referdino.json"
_HIDDEN_OURS = ".referdino"  # prefix of the marker, staging folders and temporaries
_SEGMENT_DIR = re.compile(r"\d{2,}_[a-z0-9_]+")


class OutputError(ValueError):
    """The output folder cannot be written, or writing would lose files referdino did not write."""


def check_output_dir(path: str | os.PathLike, kind: str, names: Iterable[str] = (), *,
                     overwrite: bool = False) -> dict[str, str]:
    """Refuse `path` if `kind` may not write the top-level entries `names` there; creates nothing.

    Returns referdino's entries already in the folder ({name: kind}; {} for a new or empty folder).
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file, not a folder; give a new or empty folder for the outputs")
    if not out.is_dir():
        return {}
    try:
        ours = owned_entries(out, kind)
        foreign = sorted(p.name for p in out.iterdir() if p.name not in ours and not _ours_by_name(p))
    except OSError as exc:
        raise OutputError(f"cannot read {out} ({exc.strerror or exc}); choose another output folder") from None
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(f"{out} holds files referdino did not write ({shown}); choose another output folder, "
                          "or pass --overwrite to write beside them (they are kept)")
    for name in names:
        if os.path.lexists(out / name) and ours.get(name) != kind:
            raise OutputError(f"{out / name} exists and was not written by referdino {kind}; it is kept: move it "
                              "away or choose another output folder")
    return ours


def record_outputs(path: str | os.PathLike, kind: str, names: Iterable[str], *, exclusive: bool = False) -> None:
    """Create `path` if needed and list `names` as `kind` outputs in its marker (written atomically).

    exclusive: `names` become all of `kind`'s entries (earlier ones are no longer listed).
    """
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        entries = {n: k for n, k in owned_entries(out, kind).items() if not (exclusive and k == kind)}
        entries.update(dict.fromkeys(names, kind))
        _write_marker(out, entries)
    except OSError as exc:
        raise OutputError(f"cannot write to {out} ({exc.strerror or exc}); choose a writable output folder") from None


def remove_outputs(path: str | os.PathLike, names: Iterable[str]) -> None:
    """Delete the entries `names` of `path` (the caller made sure they are referdino's)."""
    for name in names:
        target = Path(path) / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif os.path.lexists(target):
            target.unlink()


def replace_entry(staged: Path, target: Path) -> None:
    """Move the complete `staged` file or folder to `target`, replacing our earlier `target` (moved aside first,
    deleted after: `target` is never half-written)."""
    if target.is_dir() and not target.is_symlink():
        trash = Path(tempfile.mkdtemp(prefix=f"{_HIDDEN_OURS}-old-", dir=target.parent))
        os.replace(target, trash / target.name)
        os.replace(staged, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staged, target)


def owned_entries(folder: Path, kind: str) -> dict[str, str]:
    """Entries of `folder` referdino wrote: those its marker lists, plus an older version's known layout."""
    entries = {**_legacy(folder, kind), **_read_marker(folder)}
    return {n: k for n, k in entries.items() if _plain_name(n)}  # a name read from a file never leaves the folder


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and not any(sep and sep in name for sep in ("/", os.sep, os.altsep))


def _ours_by_name(p: Path) -> bool:
    """Our hidden files (marker, staging) and folders that hold their own marker (e.g. an exported model)."""
    return p.name.startswith(_HIDDEN_OURS) or (p.is_dir() and (p / MARKER).is_file())


def _read_marker(folder: Path) -> dict[str, str]:
    try:
        entries = json.loads((folder / MARKER).read_text("utf-8")).get("entries")
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in entries.items()} if isinstance(entries, dict) else {}


def _write_marker(folder: Path, entries: dict[str, str]) -> None:
    data = {"written_by": "referdino", "version": 1, "entries": dict(sorted(entries.items()))}
    fd, tmp = tempfile.mkstemp(prefix=f"{_HIDDEN_OURS}-tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=1) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, folder / MARKER)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------ layouts of versions without the marker


def _legacy(folder: Path, kind: str) -> dict[str, str]:
    find = {"segment": _legacy_segment, "model": _legacy_model, "synth": _legacy_synth, "train": _legacy_train,
            "infer": _legacy_infer}.get(kind)
    names = find(folder) if find is not None and folder.is_dir() else []
    return {n: kind for n in names if os.path.lexists(folder / n)}


def _legacy_segment(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if _SEGMENT_DIR.fullmatch(p.name) and (p / "masks.json").is_file()]


def _legacy_model(folder: Path) -> list[str]:
    """config.json + model.safetensors whose header says format "referdino" (what save_pretrained writes)."""
    try:
        with open(folder / "model.safetensors", "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size < 100_000_000 else {}
    except (OSError, ValueError):
        return []
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    ok = isinstance(meta, dict) and meta.get("format") == "referdino"
    return ["config.json", "model.safetensors"] if ok else []


def _legacy_synth(folder: Path) -> list[str]:
    try:
        world = json.loads((folder / "world.json").read_text("utf-8"))
    except (OSError, ValueError):
        world = None
    if isinstance(world, dict) and world.get("format") == "referdino-synth":
        return ["world.json", "meta_expressions", *map(str, world.get("splits") or {})]
    if (folder / ".referdino-synth-incomplete").exists():  # interrupted: splits are the folders with frames
        return ["meta_expressions", *(p.name for p in folder.iterdir() if (p / "JPEGImages").is_dir())]
    return []


def _legacy_train(folder: Path) -> list[str]:
    if (folder / "train_config.json").is_file() and (folder / "model_config.json").is_file():
        return ["train_config.json", "model_config.json", "checkpoints", "log.csv", "tensorboard"]
    return []


def _legacy_infer(folder: Path) -> list[str]:
    zips = [p.name for p in folder.glob("submission_*.zip")]
    return ["Annotations", *zips] if zips else []
