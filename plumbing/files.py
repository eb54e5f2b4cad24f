"""Files written whole or not at all, and files whose content is checked when read back.

Every result and cache file deepgap writes goes through `atomic_path`: a reader (another
run, a report, a crash) sees the old file or the new one, never half of one. The file
gets the mode a plain open() would give it (0666 less the umask, so -rw-r--r-- under the
usual 022): tempfile.mkstemp's owner-only 0600 is wrong for results meant to be shared.

`folder_lock` holds an exclusive lock on a folder for as long as a run writes into it; a
second process asking for it is refused at once, naming the holder.

`write_digest` / `digest_matches` keep a sha256 beside a cache file (`NAME.sha256`, in
sha256sum's format, so `sha256sum -c` checks it too): a cache is trusted because its
bytes are the ones written, not because a file of that name exists.

Only the standard library and plumbing.errors: sut/ uses this module as well.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from plumbing.errors import OutputError

DIGEST_SUFFIX = ".sha256"
LOCK_FILE = ".deepgap.lock"
_TEMP_SUFFIX = ".tmp"
# Folders this process holds locked -> (descriptor, depth): a submission holds its scenario
# folder and each of its runs asks again; flock would refuse a second descriptor of ours.
_held: dict[Path, list[int]] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary file beside `path` to write (by name or by opening it); when the block
    ends without an exception it replaces `path` atomically, otherwise it is removed.
    Raises OSError (the caller names what could not be written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: Path | str, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to `path` atomically. Raises OSError."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(raw)


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in blocks. Raises OSError."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def write_digest(path: Path | str) -> str:
    """Record the sha256 of `path` beside it; returns the digest. Raises OSError."""
    path = Path(path)
    digest = file_sha256(path)
    write_atomic(digest_path(path), f"{digest}  {path.name}\n")
    return digest


def digest_matches(path: Path | str) -> tuple[bool, str]:
    """(True, "") when `path` holds the bytes its recorded sha256 says, else (False, why)."""
    path = Path(path)
    try:
        recorded = digest_path(path).read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return False, f"no recorded sha256 ({digest_path(path).name})"
    except (OSError, UnicodeDecodeError) as exc:
        return False, f"its sha256 record is unreadable ({exc})"
    try:
        actual = file_sha256(path)
    except OSError as exc:
        return False, f"unreadable ({exc.strerror or exc})"
    if not recorded or recorded[0] != actual:
        return False, "its content does not match the sha256 recorded when it was written"
    return True, ""


@contextlib.contextmanager
def folder_lock(folder: Path | str, what: str = "run") -> Iterator[None]:
    """Hold `folder` for this process: another process asking for it gets an OutputError
    naming the holder's pid. flock, not a pid file: the kernel drops the lock when its
    holder dies, even by kill -9, so a stale lock never blocks the next run. Re-entrant
    within one process. Raises OutputError when the folder cannot be created."""
    folder = Path(folder).resolve()
    with _held_guard:
        if folder in _held:
            _held[folder][1] += 1
            fd = None
        else:
            fd = _acquire(folder, what)
            _held[folder] = [fd, 1]
    try:
        yield
    finally:
        with _held_guard:
            entry = _held[folder]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[folder]
                # Unlink while still holding the lock: a process that opened the old file
                # meanwhile sees it is no longer the file at that path (_acquire) and retries.
                with contextlib.suppress(OSError):
                    (folder / LOCK_FILE).unlink()
                os.close(entry[0])


def _acquire(folder: Path, what: str) -> int:
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write results to {folder}: {exc.strerror or exc}") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(f"cannot write results to {folder}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise OutputError(f"cannot lock {path}: {exc.strerror or exc}") from None
            by = f"another deepgap {what} (pid {holder})" if holder.isdigit() else f"another deepgap {what}"
            raise OutputError(f"{folder} is in use by {by}; wait for it to finish, or write elsewhere") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # the holder removed this file as we locked it: lock the new one


def _create_temp(path: Path) -> Path:
    # O_EXCL makes the name ours alone; mode 0o666 lets the kernel apply the umask, as it
    # does for any file a program creates (mkstemp would force 0600).
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
