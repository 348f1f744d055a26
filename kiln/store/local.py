"""The store's local-folder back end.

A version is staged beside its final place and renamed in (atomic); records change under a
file lock; every file is written to a temporary name, synced and renamed over the old one.

Nothing outside the store is ever read or written: every path is reached one name at a time
from the root with O_NOFOLLOW, so a symbolic link anywhere below the root (a version folder
replaced by a link to elsewhere, say) fails as ELOOP instead of being followed. The root
itself may be a link: that is the user's choice of where the store lives.

Permissions follow the process umask for everything the store creates (directories
0777 & ~umask, files 0666 & ~umask), and a setgid store root passes its group down: for a
store shared by a group, `chgrp GROUP ROOT && chmod 2770 ROOT` and run kiln with umask 007.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping

import fsspec

from kiln.store.backend import Entry
from kiln.store.layout import METADATA_FILE

log = logging.getLogger(__name__)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
# How often a publish meets a leftover folder that a concurrent clean-up removes meanwhile.
PUBLISH_ATTEMPTS = 3


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


def _open_dir(name: str, dir_fd: int) -> int:
    """A folder's fd, refusing a link in its place (O_NOFOLLOW)."""
    try:
        return os.open(name, _DIR, dir_fd=dir_fd)
    except OSError as err:
        if err.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(name, dir_fd):
            raise OSError(
                errno.ELOOP, "a symbolic link (never followed in a store)", name
            ) from None
        raise


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _reach(start: int, parts: list[str], create_from: int | None) -> int:
    """The fd of the folder `parts` below `start`, created from index `create_from` on."""
    fd = os.dup(start)
    try:
        for index, name in enumerate(parts):
            if create_from is not None and index >= create_from:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)  # umask applies; setgid is inherited
            child = _open_dir(name, fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_in(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _write_temp(dir_fd: int, data: bytes) -> str:
    """A synced temporary file in the folder, with the mode a plain create gives."""
    tmp = f".tmp-{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    return tmp


def _write_in(dir_fd: int, name: str, data: bytes) -> None:
    tmp = _write_temp(dir_fd, data)
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _remove_folder(dir_fd: int, name: str) -> None:
    """Rename a folder out of sight first, so it disappears whole, then delete it."""
    trash = f".trash-{name.lstrip('.')}-{uuid.uuid4().hex[:8]}"
    os.rename(name, trash, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    if _is_link(trash, dir_fd):
        os.unlink(trash, dir_fd=dir_fd)  # the link goes; what it points to is not the store's
        return
    shutil.rmtree(trash, dir_fd=dir_fd)  # fd-based: follows no link inside


class LocalBackend:
    local = True
    # Versions are staged elsewhere: a version folder without metadata.json is a leftover.
    writes_in_place = False
    transport_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, url: str, root: str, fs: fsspec.AbstractFileSystem) -> None:
        self.url, self.root, self.fs = url, root or "/", fs

    @contextlib.contextmanager
    def _folder(
        self, path: str, *, create: bool = False, inside: str | None = None
    ) -> Iterator[int]:
        """The folder at `path` (relative to the root), reached without following a link.

        `create` makes missing folders, except `inside` and above, which must exist."""
        parts = [p for p in path.split("/") if p]
        create_from = None
        if create:
            create_from = len([p for p in (inside or "").split("/") if p])
            if inside is None:
                os.makedirs(self.root, exist_ok=True)
        root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fd = _reach(root, parts, create_from)
        finally:
            os.close(root)
        try:
            yield fd
        finally:
            os.close(fd)

    def read(self, path: str) -> bytes:
        parent, name = _split(path)
        with self._folder(parent) as fd:
            return _read_in(fd, name)

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        found = {}
        for path in paths:
            with contextlib.suppress(OSError):
                found[path] = self.read(path)
        return found

    def exists(self, path: str) -> bool:
        parent, name = _split(path)
        try:
            with self._folder(parent) as fd:
                os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def listdir(self, path: str) -> list[str]:
        try:
            with self._folder(path) as fd:
                return sorted(os.listdir(fd))
        except FileNotFoundError:
            return []

    def walk(self, path: str) -> list[Entry]:
        found: list[Entry] = []
        try:
            with self._folder(path) as fd:
                _walk_fd(fd, path, found)
        except FileNotFoundError:
            return []
        return found

    def write(self, path: str, data: bytes, *, inside: str | None = None) -> None:
        parent, name = _split(path)
        with self._folder(parent, create=True, inside=inside) as fd:
            _write_in(fd, name, data)

    def remove(self, paths: list[str]) -> None:
        for path in paths:
            parent, name = _split(path)
            with contextlib.suppress(FileNotFoundError), self._folder(parent) as fd:
                os.unlink(name, dir_fd=fd)

    def publish(self, directory: str, files: Mapping[str, bytes]) -> None:
        parent, name = _split(directory)
        with self._folder(parent, create=True) as fd:
            staging = f".staging-{name}-{uuid.uuid4().hex[:8]}"
            os.mkdir(staging, 0o777, dir_fd=fd)
            try:
                with contextlib.closing(_Fd(_open_dir(staging, fd))) as folder:
                    for path, data in files.items():
                        _write_below(folder.fd, path, data)
                for _ in range(PUBLISH_ATTEMPTS):
                    if self._move_in(fd, staging, name, files):
                        break
                else:
                    raise OSError(errno.EBUSY, "kept meeting a leftover folder", directory)
                os.fsync(fd)
            finally:
                shutil.rmtree(staging, dir_fd=fd, ignore_errors=True)

    def _move_in(self, fd: int, staging: str, name: str, files: Mapping[str, bytes]) -> bool:
        """Rename the staged version in; True once the version is committed (by anyone)."""
        try:
            os.rename(staging, name, src_dir_fd=fd, dst_dir_fd=fd)
            return True
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        # Something is in the way: the same version committed by another writer (same id,
        # same bytes: nothing to do), or a folder an interrupted store left without its
        # commit. That one is completed in place, metadata.json last and create-only, the
        # way an object store commits, so a reader never sees it half-done.
        try:
            with contextlib.closing(_Fd(_open_dir(name, fd))) as target:
                if not _lexists(METADATA_FILE, target.fd):
                    log.warning("completing the incomplete version folder %s", name)
                    _complete(target.fd, files)
                # Still in place (a clean-up may have renamed it away while it was filled)?
                here = os.stat(name, dir_fd=fd, follow_symlinks=False).st_ino
                return here == os.fstat(target.fd).st_ino and _lexists(METADATA_FILE, target.fd)
        except FileNotFoundError:
            return False  # cleaned away meanwhile: rename again

    def discard(self, directory: str) -> None:
        parent, name = _split(directory)
        with self._folder(parent) as fd:
            _remove_folder(fd, name)

    def remove_tree(self, directory: str, files: list[str]) -> None:
        parent, name = _split(directory)
        with self._folder(parent) as fd:
            trash = f".trash-{name.lstrip('.')}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(name, trash, src_dir_fd=fd, dst_dir_fd=fd)
            except FileNotFoundError:
                return
            # A writer may have committed this version since it was listed without its
            # metadata.json: then it goes back (or stays with the same bytes put in its place).
            if not name.startswith(".") and _lexists(f"{trash}/{METADATA_FILE}", fd):
                with contextlib.suppress(OSError):
                    os.rename(trash, name, src_dir_fd=fd, dst_dir_fd=fd)
                    return
            shutil.rmtree(trash, dir_fd=fd)

    def update(self, path: str, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
        parent, name = _split(path)
        with self._folder(parent, create=True) as fd:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
            lock = os.open(f".{name}.lock", flags, 0o666, dir_fd=fd)  # umask applies
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    before: bytes | None = _read_in(fd, name)
                except FileNotFoundError:
                    before = None
                after = change(before)
                if after is not None:
                    _write_in(fd, name, after)
                elif before is not None:
                    os.unlink(name, dir_fd=fd)
                return after
            finally:
                os.close(lock)


class _Fd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        os.close(self.fd)


def _lexists(path: str, dir_fd: int) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _write_below(dir_fd: int, path: str, data: bytes, *, replace: bool = False) -> None:
    """Write a new file at a relative path below a folder, making its folders; synced."""
    parent, name = _split(path)
    fd = _reach(dir_fd, [p for p in parent.split("/") if p], 0)
    try:
        if replace:
            _write_in(fd, name, data)
            return
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=fd)
        with os.fdopen(out, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        os.close(fd)


def _complete(dir_fd: int, files: Mapping[str, bytes]) -> None:
    """Fill a leftover version folder in place and commit it (create-only, like S3's)."""
    for path, data in files.items():
        if path != METADATA_FILE:
            _write_below(dir_fd, path, data, replace=True)
    tmp = _write_temp(dir_fd, files[METADATA_FILE])
    try:
        os.link(tmp, METADATA_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        pass  # another writer committed the same version first
    finally:
        os.unlink(tmp, dir_fd=dir_fd)


def _walk_fd(dir_fd: int, prefix: str, found: list[Entry]) -> None:
    with os.scandir(dir_fd) as entries:
        listed = list(entries)
    for entry in listed:
        path = f"{prefix}/{entry.name}" if prefix else entry.name
        try:
            modified = entry.stat(follow_symlinks=False).st_mtime
            if entry.is_symlink():
                found.append(Entry(path, "link", modified))
            elif entry.is_dir(follow_symlinks=False):
                with contextlib.closing(_Fd(_open_dir(entry.name, dir_fd))) as child:
                    found.append(Entry(path, "dir", modified))  # listed once it could be opened
                    _walk_fd(child.fd, path, found)
            else:
                found.append(Entry(path, "file", modified))
        except FileNotFoundError:
            continue  # removed since the folder was listed
