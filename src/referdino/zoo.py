"""The published models by name: `referdino models`, `--model NAME`, `ReferDino.from_pretrained(NAME)`.

One entry per file released on the Hugging Face Hub repository `liangtm/referdino` (account §5), plus `demo`,
the small model embedded in the package (always available offline).

Resolution of a NAME:

1. The official `.pth` comes through `huggingface_hub.hf_hub_download` (its cache, `HF_HUB_CACHE` /
   `HF_HOME`, `HF_HUB_OFFLINE`, `HF_TOKEN`, `HF_ENDPOINT`, its progress bar, resumable downloads). When the
   hub's documented file name is missing the alternative spelling is tried (`ryt_mevis_swinb.pth` is linked
   as `ryb_mevis_swinb.pth`).
2. It is converted ONCE by the strict official converter into our format (`config.json` + `model.safetensors`,
   as `save_pretrained` writes) under ``$REFERDINO_CACHE/<name>/<revision>/`` (default
   ``$HF_HOME/referdino``, i.e. ``~/.cache/huggingface/referdino``), keyed by the entry name and the hub
   revision (the commit hash of the snapshot the file came from). The folder is written in a temporary folder
   beside it and renamed into place; a stamp (`referdino-stamp.json`) records the source file and the size
   and sha256 of each written file. A copy whose stamp is missing or whose files do not match is converted
   again.
3. Later calls load the converted safetensors directly: offline, with no hub request at all; online, after
   one metadata request (so a converted copy is found even if the hub file was deleted to save space).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .weights import CONFIG_NAME, WEIGHTS_NAME, CheckpointError

logger = logging.getLogger(__name__)

HUB_REPO = "liangtm/referdino"
DEFAULT_MODEL = "ryt_mevis_swinb"  #: the official demo's model, the default of `referdino segment`
DEMO = "demo"
STAMP_NAME = "referdino-stamp.json"
CONVERTER_VERSION = 1  #: bump when the conversion changes: older converted copies are redone


class ModelName(str):
    """A `--model` value: a zoo name, never read as a path (the `--model` / `--checkpoint` flags share a dest)."""


class ModelUnavailableError(CheckpointError):
    """A published model that is neither cached nor downloadable now (offline, no network)."""


@dataclass(frozen=True)
class ZooEntry:
    name: str
    preset: str  #: our preset (referdino.config.PRESETS)
    backbone: str
    trained_on: str
    reported: str  #: published figures for this file (account §7), "-" when none
    filenames: tuple[str, ...] = ()  #: hub file names, the documented one first, then other spellings
    repo_id: str | None = HUB_REPO  #: None: embedded in the package
    note: str = ""

    @property
    def embedded(self) -> bool:
        return self.repo_id is None

    @property
    def location(self) -> str:
        return "in the package" if self.embedded else f"{self.repo_id}/{self.filenames[0]}"


_SOURCES = (
    "figures: the paper's, from third-party listings (reference account §7); the official README reports none "
    "per file"
)

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("demo", "tiny", "tiny Swin", "our synthetic shapes world", "-", repo_id=None,
                 note="trained by `referdino train` in about 2 CPU-hours; knows only that world: for trying"
                      " the tools offline"),
        ZooEntry("coco_swinb", "coco_swinb", "Swin-B", "RefCOCO/+/g", "-", ("coco_swinb.pth",),
                 note="image pretraining; its temporal decoder is untrained"),
        ZooEntry("ryt_swinb", "ytvos_swinb", "Swin-B", "RefCOCO, Ref-YouTube-VOS",
                 "Ref-YTVOS J&F 69.3; Ref-DAVIS17 J&F 68.9 (zero-shot)", ("ryt_swinb.pth",)),
        ZooEntry("a2d_swinb", "a2d_swinb", "Swin-B", "RefCOCO, A2D-Sentences",
                 "A2D oIoU 82.1; JHMDB mAP 46.6", ("a2d_swinb.pth",),
                 note="single-frame model; its temporal decoder is untrained"),
        ZooEntry("mevis_swinb", "mevis_swinb", "Swin-B", "MeViS", "MeViS valid J&F 49.3", ("mevis_swinb.pth",)),
        ZooEntry("ryt_mevis_swinb", "ytvos_swinb", "Swin-B", "RefCOCO, Ref-YouTube-VOS, MeViS", "-",
                 ("ryt_mevis_swinb.pth", "ryb_mevis_swinb.pth"),
                 note="the official demo's model; linked on the hub as ryb_mevis_swinb.pth"),
        ZooEntry("coco_swint", "coco_swint", "Swin-T", "RefCOCO/+/g", "-", ("coco_swint.pth",),
                 note="the only released Swin-T file (iSEE-Laboratory/ReferDINO#14)"),
    )
}

ALIASES = {"ryb_mevis_swinb": "ryt_mevis_swinb"}


def known_names() -> list[str]:
    return list(ZOO) + [a for a in ALIASES if ALIASES[a] in ZOO]


def unknown_model_error(name: str, *, as_path: bool = False) -> CheckpointError:
    also = " or the path of a checkpoint file or folder" if as_path else ""
    return CheckpointError(f"unknown model {name!r}; known models: {', '.join(ZOO)}{also} (see `referdino models`)")


def get_entry(name: str) -> ZooEntry:
    name = ALIASES.get(name, name)
    if name not in ZOO:
        raise unknown_model_error(name)
    return ZOO[name]


# ------------------------------------------------------------------------------------------------- places
def _expand(value: str) -> Path:
    return Path(os.path.expanduser(os.path.expandvars(value)))


def hf_home() -> Path:
    """`$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (read at call time)."""
    if os.environ.get("HF_HOME"):
        return _expand(os.environ["HF_HOME"])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return _expand(xdg) / "huggingface"


def hub_cache_dir() -> Path:
    """The hub cache huggingface_hub uses (`$HF_HUB_CACHE`, else `$HF_HOME/hub`), read at call time."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return _expand(os.environ[var])
    return hf_home() / "hub"


def cache_root() -> Path:
    """Our converted copies: `$REFERDINO_CACHE`, else `$HF_HOME/referdino`."""
    env = os.environ.get("REFERDINO_CACHE")
    return _expand(env) if env else hf_home() / "referdino"


def converted_dir(name: str, revision: str) -> Path:
    return cache_root() / name / revision


def offline() -> bool:
    from huggingface_hub import constants

    truthy = {"1", "ON", "YES", "TRUE"}
    env = any((os.environ.get(v) or "").upper() in truthy for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(constants.HF_HUB_OFFLINE)


def _no_network(endpoint: str | None) -> str | None:
    """Why the hub surely cannot be reached (its host name does not resolve), else None. Skipped behind a
    proxy. Saves the hub client's retries (about 20 s per file) on a machine without network."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY",
                                       "http_proxy")):
        return None
    host = urlparse(endpoint or constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    return None


def _hub_kwargs() -> dict:
    from . import __version__

    return {
        "cache_dir": str(hub_cache_dir()),
        "endpoint": (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None,
        "library_name": "referdino",
        "library_version": __version__,
    }


# -------------------------------------------------------------------------------------- converted copies
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_converted(folder: Path, *, source: dict | None = None) -> str | None:
    """None if `folder` is a complete converted copy (of `source`, when given), else why it is not."""
    stamp_file = folder / STAMP_NAME
    if not folder.is_dir():
        return "absent"
    if not stamp_file.is_file():
        return f"{folder} has no {STAMP_NAME} (an interrupted conversion?)"
    try:
        stamp = json.loads(stamp_file.read_text())
        files = stamp["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{stamp_file} is unreadable"
    if stamp.get("converter") != CONVERTER_VERSION:
        return f"{folder} was written by another converter version"
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        path = folder / name
        expected = files.get(name, {}).get("size")
        size = path.stat().st_size if path.is_file() else None
        if size != expected:
            return f"{path} is incomplete ({size} bytes, expected {expected})"
    if _sha256(folder / CONFIG_NAME) != files[CONFIG_NAME].get("sha256"):
        return f"{folder / CONFIG_NAME} was modified"
    if source:
        had = stamp.get("source", {})
        for key in ("filename", "size"):
            if source.get(key) is not None and had.get(key) != source[key]:
                return f"{folder} was converted from another file ({had.get(key)} != {source[key]})"
    return None


def _replace_dir(tmp: Path, folder: Path, source: dict | None = None) -> None:
    """Move the finished `tmp` folder to `folder` (same parent, so a rename), replacing a broken copy."""
    if check_converted(folder, source=source) is None:  # another process finished the same conversion: keep it
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except OSError:
        if check_converted(folder, source=source) is None:  # another process finished the same conversion first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _convert_to_cache(entry: ZooEntry, hub_file: Path, filename: str, revision: str, folder: Path) -> None:
    """Strict official conversion of `hub_file` into `folder` (atomic), with the stamp."""
    import torch
    from safetensors.torch import save_file

    from .config import get_preset
    from .modeling.referdino import ReferDino
    from .resolve import OFFICIAL, _convert, _strip_module, detect_config, detect_layout, read_checkpoint_file
    from .weights import compare_state_dict

    start = time.perf_counter()
    try:
        state, _ = read_checkpoint_file(hub_file)
    except CheckpointError as exc:
        real = os.path.realpath(hub_file)
        raise CheckpointError(
            f"{exc} - it is the hub file {entry.repo_id}/{filename} (revision {revision[:7]}), probably an "
            f"incomplete download: delete {real} and run again to download it again"
        ) from None
    state = _strip_module(state)
    layout = detect_layout(state)
    if layout != OFFICIAL:
        raise CheckpointError(
            f"{hub_file} ({entry.repo_id}/{filename}) is not an official ReferDINO checkpoint "
            f"(layout: {layout or 'unknown'})"
        )
    config, preset = detect_config(state, OFFICIAL, str(hub_file))
    if get_preset(entry.preset).with_merged_lora() != config.with_merged_lora():
        logger.warning("%s: the file's keys and shapes say preset %s, the zoo says %s; using the file's",
                       filename, preset, entry.preset)
    resolved = _convert(state, OFFICIAL, config, str(hub_file), preset)
    del state
    with torch.device("meta"):
        skeleton = ReferDino(resolved.config)
    report = compare_state_dict(skeleton, resolved.state)
    if not report.ok:
        raise CheckpointError(f"{hub_file} does not fit preset {preset}: {report.summary()}")
    own = skeleton.state_dict()
    out = {}
    seen: set[int] = set()
    for key, value in resolved.state.items():
        value = value.detach().to(own[key].dtype).contiguous()
        if value.data_ptr() in seen:
            value = value.clone()
        seen.add(value.data_ptr())
        out[key] = value
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        save_file(out, str(tmp / WEIGHTS_NAME), metadata={"format": "referdino"})
        (tmp / CONFIG_NAME).write_text(resolved.config.to_json())
        files = {n: {"size": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in (WEIGHTS_NAME, CONFIG_NAME)}
        stamp = {
            "converter": CONVERTER_VERSION,
            "name": entry.name,
            "preset": preset,
            "source": {"repo_id": entry.repo_id, "filename": filename, "revision": revision,
                       "size": hub_file.stat().st_size},
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / STAMP_NAME).write_text(json.dumps(stamp, indent=2))
        _replace_dir(tmp, folder, stamp["source"])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("converted %s/%s once in %.1f s -> %s (%s)", entry.repo_id, filename, time.perf_counter() - start,
                folder, resolved.summary)
    for other in folder.parent.iterdir():  # copies of older hub revisions: replaced by this one
        if other != folder and not other.name.startswith(".") and (other / STAMP_NAME).is_file():
            logger.info("removing the converted copy of an older revision: %s", other)
            shutil.rmtree(other, ignore_errors=True)


def _valid_converted_copies(name: str) -> list[Path]:
    root = cache_root() / name
    if not root.is_dir():
        return []
    copies = [d for d in root.iterdir() if not d.name.startswith(".") and check_converted(d) is None]
    return sorted(copies, key=lambda d: (d / STAMP_NAME).stat().st_mtime, reverse=True)


def _hub_ref(entry: ZooEntry, ref: str = "main") -> str | None:
    """The commit the hub cache last saw for `ref` (its `refs/<ref>` file), if any."""
    path = hub_cache_dir() / f"models--{entry.repo_id.replace('/', '--')}" / "refs" / ref  # type: ignore[union-attr]
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------ resolve
def _unavailable(entry: ZooEntry, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"the published model {entry.name!r} ({entry.location}) is not in the local cache ({hub_cache_dir()}) and "
        f"{reason}; connect once to download it, or run offline with --model demo (the embedded model) or "
        "--checkpoint PATH (a checkpoint file or folder on disk)"
    )


def ensure_converted(name: str) -> Path:
    """The folder of our converted copy of zoo model `name` (downloading and converting it if needed)."""
    entry = get_entry(name)
    if entry.embedded:
        from .demo_model import demo_model_path

        path = demo_model_path()
        if path is None:
            raise CheckpointError("this install has no embedded demo model")
        return path
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    is_offline = offline()
    kwargs = _hub_kwargs()
    unreachable = None if is_offline else _no_network(kwargs["endpoint"])
    local_only = is_offline or unreachable is not None
    info, filename, not_found, local_error = None, None, [], None
    for candidate in entry.filenames:
        try:
            info = hf_hub_download(entry.repo_id, candidate, dry_run=True, local_files_only=local_only, **kwargs)
        except LocalEntryNotFoundError as exc:  # offline or no connection, and not cached
            local_error = exc
            if not local_only:  # the hub did not answer: look for the other spellings in the cache only
                cause = exc.__cause__ or exc
                unreachable = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:160]
                local_only = True
            continue
        except EntryNotFoundError:  # the hub has no file of this spelling: try the next one
            not_found.append(candidate)
            continue
        except (HfHubHTTPError, OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"cannot fetch {entry.repo_id}/{candidate} from the hub: {first}") from None
        filename = candidate
        break
    if info is None:
        if local_error is None:
            raise CheckpointError(f"the hub repository {entry.repo_id} has none of {', '.join(not_found)}")
        preferred = _hub_ref(entry)
        copies = _valid_converted_copies(entry.name)
        copies.sort(key=lambda d: d.name != preferred)
        if copies:
            logger.info("%s: the hub file is not available (%s); using the converted copy %s", name,
                        "offline" if is_offline else "no connection", copies[0])
            return copies[0]
        if is_offline:
            raise _unavailable(entry, "HF_HUB_OFFLINE is set, so it cannot be downloaded")
        raise _unavailable(entry, f"the Hugging Face Hub cannot be reached ({unreachable})")

    revision = info.commit_hash
    folder = converted_dir(entry.name, revision)
    source = {"filename": filename, "size": info.file_size}
    problem = check_converted(folder, source=source)
    if problem is None:
        return folder
    if problem != "absent":
        logger.warning("%s; converting again", problem)
    if local_only:
        path = Path(info.local_path)
    else:
        if info.will_download:
            logger.info("first use of %s: downloading %s/%s (revision %s) into %s", entry.name, entry.repo_id,
                        filename, revision[:7], kwargs["cache_dir"])
        path = Path(hf_hub_download(entry.repo_id, filename, revision=revision, **kwargs))
    size = path.stat().st_size
    if info.file_size is not None and size != info.file_size:
        raise CheckpointError(
            f"the hub file {path} ({entry.repo_id}/{filename}) is incomplete ({size} of {info.file_size} bytes): "
            f"delete {os.path.realpath(path)} and run again to download it again"
        )
    logger.info("converting %s/%s once into %s (later runs load it directly)", entry.repo_id, filename, folder)
    _convert_to_cache(entry, path, filename, revision, folder)
    return folder


def resolve_model(name: str):  # type: ignore[no-untyped-def]
    """`referdino.resolve.Resolved` of zoo model `name` (see `ensure_converted`)."""
    from .resolve import resolve_folder

    entry = get_entry(name)
    folder = ensure_converted(entry.name)
    try:
        resolved = resolve_folder(folder)
    except CheckpointError as exc:
        if entry.embedded:
            raise
        logger.warning("the converted copy %s is unreadable (%s); converting again", folder, exc)
        (folder / STAMP_NAME).unlink(missing_ok=True)
        resolved = resolve_folder(ensure_converted(entry.name))
    resolved.source = f"{entry.name} ({folder})"
    resolved.preset = entry.preset
    return resolved


# ----------------------------------------------------------------------------------------- the listing
def _status(entry: ZooEntry) -> tuple[str, str]:
    """(hub file cached?, converted copy cached?) as short words."""
    if entry.embedded:
        return "-", "yes (embedded)"
    from huggingface_hub import try_to_load_from_cache

    hub, revision = "no", None
    for filename in entry.filenames:
        found = try_to_load_from_cache(entry.repo_id, filename, cache_dir=str(hub_cache_dir()))
        if isinstance(found, str) and os.path.isfile(found):
            revision = Path(found).parent.name
            hub = f"yes ({revision[:7]})" + ("" if filename == entry.filenames[0] else f" as {filename}")
            break
    if revision is not None:
        problem = check_converted(converted_dir(entry.name, revision))
        if problem is None:
            return hub, "yes"
        return hub, "no" if problem == "absent" else "incomplete"
    copies = _valid_converted_copies(entry.name)
    return hub, f"yes ({copies[0].name[:7]})" if copies else "no"


def models_table() -> str:
    rows = [("name", "backbone", "preset", "trained on", "published figures", "hub file cached", "converted")]
    for entry in ZOO.values():
        hub, converted = _status(entry)
        name = entry.name + (" (default)" if entry.name == DEFAULT_MODEL else "")
        rows.append((name, entry.backbone, entry.preset, entry.trained_on, entry.reported, hub, converted))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {e.name}: {e.note}" for e in ZOO.values() if e.note]
    return "\n".join(
        lines
        + ["", f"hub files: https://huggingface.co/{HUB_REPO} (downloaded on first use into {hub_cache_dir()})",
           f"converted copies: {cache_root()} (set REFERDINO_CACHE to move them)",
           _SOURCES, "notes:"]
        + notes
    )
