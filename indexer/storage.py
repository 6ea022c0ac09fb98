"""The on-disk index directory: `manifest.json` plus `.npy` arrays opened with mmap.

Writes go to a temporary sibling directory that is renamed into place only once complete,
so an interrupted or failed build never damages the index already at that path.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from lsr.errors import LsrError
from lsr.formats.atomic import NoSpaceError, atomic_directory as write_atomic_directory  # noqa: F401  (NoSpaceError: re-exported)

FORMAT = "lsr-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class IndexFormatError(LsrError):
    """The directory is not an lsr index, or was written by an incompatible version."""


class UnsafeTargetError(LsrError):
    """Writing the index there would replace or write into something that is not an index."""


def is_index(path: str | Path) -> bool:
    """True for a directory whose manifest.json names the lsr index format (any version,
    damaged arrays included: it is ours to replace)."""
    manifest = Path(path) / MANIFEST
    try:
        text = manifest.read_text(errors="replace")
    except OSError:
        return False
    try:
        return json.loads(text).get("format") == FORMAT
    except (ValueError, AttributeError):
        return f'"{FORMAT}"' in text


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_target(path: str | Path, protect: tuple[str | Path, ...] = ()) -> None:
    """Refuse to replace `path` unless it is missing, an empty folder or an lsr index, and
    refuse any `path` inside a `protect`ed path (the corpus) or containing one."""
    path = Path(path)
    if path.is_symlink() or path.exists():
        try:
            empty = path.is_dir() and not any(path.iterdir())
        except PermissionError:
            raise LsrError(f"{path}: permission denied") from None
        if path.is_symlink() or not path.is_dir() or not (is_index(path) or empty):
            raise UnsafeTargetError(f"{path} exists and is not an lsr index; choose another --index or remove it")
    real = os.path.realpath(path)
    for item in protect:
        other = os.path.realpath(item)
        if _inside(real, other):
            raise UnsafeTargetError(f"{path} is inside the corpus {item}; choose another --index")
        if _inside(other, real):
            raise UnsafeTargetError(f"the corpus {item} is inside {path}; choose another --index")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_directory(path: str | Path, protect: tuple[str | Path, ...] = (), expected_bytes: int = 0):
    """`lsr.formats.atomic.atomic_directory` under the index refusal rule: `path` must be
    missing, an empty folder or an lsr index, and not inside nor around a path of `protect`
    (`UnsafeTargetError` before a byte is written)."""
    return write_atomic_directory(path, lambda target: check_target(target, protect), expected_bytes)


class Generation:
    """One generation of an index directory, opened once: `root` reads from it even after a
    rebuild has renamed another generation into place (Linux: through /proc/self/fd;
    elsewhere `root` is the path itself and `replaced()` tells a reader to start again)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd
        proc = Path(f"/proc/self/fd/{fd}")
        self.root = proc if proc.is_dir() else path
        self._id = os.fstat(fd).st_ino

    def replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._id
        except OSError:
            return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


def open_generation(path: str | Path) -> Generation:
    path = Path(path)
    for attempt in range(50):  # a rebuild without an atomic exchange leaves a short gap
        try:
            return Generation(path, os.open(path, os.O_RDONLY | os.O_DIRECTORY))
        except FileNotFoundError:
            if not any(path.parent.glob(f".{path.name}.old-*")):
                break
            time.sleep(0.01)
        except NotADirectoryError:
            raise IndexFormatError(f"{path}: not an lsr index (a file)") from None
        except PermissionError:
            raise IndexFormatError(f"{path}: permission denied (cannot read the index)") from None
    raise LsrError(f"{path}: no index here (build one with `lsr index CORPUS`)")


def save_array(file: Path, array: np.ndarray) -> None:
    """`np.save` through plain writes: a full disk raises OSError(ENOSPC) (NumPy's own
    writer reports a short write without an errno)."""
    array = np.ascontiguousarray(array)
    with open(file, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        f.write(memoryview(array.reshape(-1)).cast("B"))


def save_arrays(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        save_array(directory / f"{name}.npy", array)


def damaged(path: str | Path, why: str) -> IndexFormatError:
    return IndexFormatError(f"{path}: {why} (index is damaged; rebuild it)")


def _load_npy(file: Path, mmap: bool) -> np.ndarray:
    try:
        array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except PermissionError:
        raise IndexFormatError(f"{file}: permission denied (cannot read the index)") from None
    except FileNotFoundError:
        raise damaged(file, "missing") from None
    except Exception as err:  # bad header (ValueError, SyntaxError, tokenize.TokenError...), object dtype, short data
        why = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise damaged(file, f"unreadable array ({why})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        raise damaged(file, "not a one-dimensional array")
    return array


def load_arrays(
    directory: str | Path, names: list[str], mmap: bool = True, dtypes: dict[str, tuple] | None = None
) -> dict[str, np.ndarray]:
    """The named `.npy` arrays (memory-mapped), each checked to be 1-D and, where `dtypes`
    names it, of one of the expected types; never unpickles."""
    directory = Path(directory)
    arrays = {}
    for name in names:
        array = _load_npy(directory / f"{name}.npy", mmap)
        allowed = (dtypes or {}).get(name)
        if allowed and array.dtype not in [np.dtype(t) for t in allowed]:
            raise damaged(directory / f"{name}.npy", f"dtype {array.dtype}, expected {' or '.join(map(str, allowed))}")
        arrays[name] = array
    return arrays


def check_length(directory: str | Path, name: str, array: np.ndarray, length: int) -> None:
    if len(array) != length:
        raise damaged(Path(directory) / f"{name}.npy", f"{len(array)} entries, expected {length}")


def check_pointer(directory: str | Path, name: str, ptr: np.ndarray, length: int, end: int) -> None:
    """`ptr` is an offset array: `length` entries, from 0 to `end`, never decreasing (O(n))."""
    check_length(directory, name, ptr, length)
    if length and (ptr[0] != 0 or ptr[-1] != end):
        raise damaged(Path(directory) / f"{name}.npy", f"offsets run from {ptr[0]} to {ptr[-1]}, expected 0 to {end}")
    if length > 1 and not bool(np.all(ptr[1:] >= ptr[:-1])):
        raise damaged(Path(directory) / f"{name}.npy", "offsets decrease")


def check_range(directory: str | Path, name: str, array: np.ndarray, high: int) -> None:
    """Every value of `array` in [0, high) (a full scan: for --verify and first searches)."""
    if len(array) and (int(array.min()) < 0 or int(array.max()) >= high):
        raise damaged(Path(directory) / f"{name}.npy", f"values outside [0, {high})")


def write_manifest(
    directory: Path,
    kind: str,
    skip_subdirectories: tuple[str, ...] | list[str] = (),
    linked_from: tuple[Path, dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Write manifest.json listing every file already in `directory` with its size and sha256.

    Subdirectories named in `skip_subdirectories` carry their own manifest and are left out.
    `linked_from`: (an earlier directory, its manifest): a file that is a hard link to the
    same path there keeps that manifest's entry instead of being hashed again (files are never
    written in place, so the same inode is the same content).
    """

    def entry(p: Path) -> dict[str, Any]:
        rel = p.relative_to(directory).as_posix()
        if linked_from is not None:
            old_root, old_manifest = linked_from
            old = old_manifest.get("files", {}).get(rel)
            try:
                if old is not None and os.path.samefile(p, old_root / rel):
                    return old
            except OSError:
                pass
        return {"bytes": p.stat().st_size, "sha256": _sha256(p)}

    files = {
        p.relative_to(directory).as_posix(): entry(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST and p.relative_to(directory).parts[0] not in skip_subdirectories
    }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
        "files": files,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_manifest(directory: str | Path, verify: bool = False) -> dict[str, Any]:
    """Read and check manifest.json (format, version, listed files present with their sizes);
    `verify=True` also checks every file's sha256."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"{directory}: not an lsr index (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except PermissionError:
        raise IndexFormatError(f"{path}: permission denied (cannot read the index)") from None
    except (ValueError, OSError) as err:
        raise damaged(path, f"unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not an lsr index manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: index format version {version}, this lsr reads version {FORMAT_VERSION}; rebuild the index"
        )
    files = manifest.get("files")
    if not isinstance(manifest.get("kind"), str) or not isinstance(files, dict) or not _int(manifest.get("n_docs", 0)):
        raise damaged(path, "manifest fields missing or of the wrong type")
    for name, info in files.items():
        file = directory / name
        if not isinstance(info, dict) or not _int(info.get("bytes")) or ".." in Path(name).parts:
            raise damaged(path, f"bad entry for {name!r}")
        try:
            size = file.stat().st_size if file.is_file() else -1
        except OSError:  # gone between the two calls (a rebuild replaced the generation)
            size = -1
        if size != info["bytes"]:
            raise damaged(file, "missing or truncated")
        if verify:
            try:
                digest = _sha256(file)
            except PermissionError:
                raise IndexFormatError(f"{file}: permission denied (cannot read the index)") from None
            if digest != info.get("sha256"):
                raise damaged(file, "checksum mismatch")
    return manifest
