"""The one atomic-directory writer: a folder is written whole into a temporary sibling and
swapped into place, so a failed or interrupted write never damages what was there.

Used by indexes (`lsr.indexer.storage`, under the index refusal rule), the eval caches and
the Lucene export (`lsr.eval.lucene`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from lsr.errors import LsrError


class NoSpaceError(LsrError):
    """The disk (or quota) filled up while writing."""


def mount_point(path: str | Path) -> str:
    """The mount point of the file system holding `path` (for messages)."""
    path = Path(os.path.realpath(path))
    while not path.exists():
        path = path.parent
    device = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == device:
        path = path.parent
    return str(path)


@contextlib.contextmanager
def atomic_directory(
    path: str | Path,
    check: Callable[[Path], None] | None = None,
    expected_bytes: int = 0,
    what: str = "index",
) -> Iterator[Path]:
    """Yield a fresh temporary sibling of `path`; on success it replaces `path` whole.

    `check(path)`, the caller's refusal rule, runs before a byte is written and again before
    the swap (something may have appeared meanwhile); it raises to refuse. On any exception
    (or interruption) the temporary directory is removed and `path` is left exactly as it
    was; a full disk becomes `NoSpaceError` ("no space left on MOUNT (needed ~X MB)", X the
    larger of `expected_bytes` and what was written), a permission error one line naming
    `what` is written. Temporary siblings of killed writers are removed on the next write.
    """
    if check:
        check(Path(path))
    path = Path(path).absolute()
    tmp = owner = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        owner = tmp.with_name(tmp.name + ".pid")
        owner.write_text(str(os.getpid()))
        yield tmp
        if check:
            check(path)
        if path.exists() and _exchange(tmp, path):  # readers see the old or the new, never none
            shutil.rmtree(tmp, ignore_errors=True)
        elif path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as err:
        written = _bytes_under(tmp) if tmp else 0
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        if _no_space(err):
            needed = max(written, expected_bytes) / 2**20
            raise NoSpaceError(f"no space left on {mount_point(path.parent)} (needed ~{needed:,.0f} MB)") from None
        if isinstance(err, PermissionError):
            where = err.filename or ""
            if not where or str(where).startswith(str(path.parent / f".{path.name}.tmp-")):
                where = path.parent  # our temporary sibling could not be made: the folder is read-only
            raise LsrError(f"cannot write the {what} {path}: permission denied ({where})") from None
        raise
    finally:
        if owner:
            owner.unlink(missing_ok=True)


def _no_space(err: BaseException) -> bool:
    return isinstance(err, NoSpaceError) or (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT))


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the
    system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned(path: Path) -> None:
    """Delete temporary siblings left by writers that were killed (their process is gone)."""
    for owner in path.parent.glob(f".{path.name}.tmp-*.pid"):
        try:
            pid = int(owner.read_text() or 0)
        except (OSError, ValueError):
            continue
        if pid and not _alive(pid):
            shutil.rmtree(owner.with_suffix(""), ignore_errors=True)
            owner.unlink(missing_ok=True)
