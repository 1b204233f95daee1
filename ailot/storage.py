"""Paths under a sweep's storage: a local directory or any fsspec URI (s3://, gs://, file://, memory://).

Local paths stay `pathlib.Path`; URIs stay strings, because pathlib folds 's3://bucket' into 's3:/bucket' (a
local directory named 's3:'). Every write publishes whole files: a reader sees the old file or the new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ailot.errors import AilotInputError

StoragePath = Path | str


def is_uri(path: StoragePath) -> bool:
    return "://" in str(path)


def scheme(path: StoragePath) -> str | None:
    """The URI scheme ('s3', 'memory', ...) or None for a local path."""
    return str(path).split("://", 1)[0].lower() if is_uri(path) else None


def check_scheme(path: StoragePath, what: str) -> None:
    """Refuse a URI whose scheme fsspec does not know (cheap: imports nothing, touches nothing)."""
    from fsspec.registry import known_implementations, registry

    name = scheme(path)
    if name is not None and name not in known_implementations and name not in registry:
        raise AilotInputError(what, f"{str(path)!r} has an unknown URI scheme '{name}://'",
                              "give a local directory or a URI fsspec knows (file://, s3://, gs://, memory://, ...)")


def check_writable(path: StoragePath, what: str) -> None:
    """Refuse, before any work, a storage path that cannot take files: an unknown scheme or one whose package is
    missing, a local path that is (or lies under) a file, or a directory this process cannot write. A local path
    is probed with a temporary file in its nearest existing directory, so nothing is created where it belongs;
    remote stores are not contacted."""
    check_scheme(path, what)
    if is_uri(path):
        try:
            cls = fsspec.get_filesystem_class(scheme(path))
        except ImportError as exc:  # e.g. s3fs, gcsfs not installed
            raise AilotInputError(what, f"{str(path)!r} needs a package that is missing ({exc})",
                                  "install it in the environment that runs the sweep, or use a local path") from None
        if not issubclass(cls, LocalFileSystem):  # not instantiated: some connect when created
            return
        path = Path(_fs(path)[1])
    here = Path(path).absolute()
    while not here.exists() and not here.is_symlink():
        here = here.parent
    if not here.is_dir():
        raise AilotInputError(what, f"{str(path)!r} is (or lies under) the file {str(here)!r}, not a directory",
                              "give a directory path (or remove the file)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ailot-write-probe-", dir=here)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise AilotInputError(what, f"{str(path)!r} cannot be written ({exc.strerror or exc} in {str(here)!r})",
                              "give a directory you can write to") from None


def join(root: StoragePath, *parts: str) -> StoragePath:
    if is_uri(root):
        return "/".join([str(root).rstrip("/"), *parts])
    return Path(root).joinpath(*parts)


def absolute(path: StoragePath) -> StoragePath:
    """Local paths resolved against the current directory (Ray workers run elsewhere); URIs as they are."""
    return str(path) if is_uri(path) else Path(path).resolve()


def _fs(path: StoragePath):
    return fsspec.core.url_to_fs(str(path))


def exists(path: StoragePath) -> bool:
    fs, p = _fs(path)
    return fs.exists(p)


def makedirs(path: StoragePath) -> None:
    fs, p = _fs(path)
    fs.makedirs(p, exist_ok=True)  # a no-op on object stores, which have no directories


def read_bytes(path: StoragePath) -> bytes:
    fs, p = _fs(path)
    return fs.cat_file(p)


def write_bytes(path: StoragePath, data: bytes) -> None:
    """Write to a unique temporary sibling, then move it over `path` (a rename on local disk; on an object
    store a server-side copy, which publishes the whole object at once)."""
    fs, p = _fs(path)
    fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex}"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, p)


def append_line(path: StoragePath, line: str) -> None:
    """One line added to a log that several processes write. Object stores cannot append: there each line is
    its own object under `<path>.d/`; `read_lines` reads both forms."""
    fs, p = _fs(path)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
        with open(p, "a") as f:  # O_APPEND: lines of concurrent writers do not interleave
            f.write(line.rstrip("\n") + "\n")
    else:
        write_bytes(f"{str(path).rstrip('/')}.d/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}",
                    (line.rstrip("\n") + "\n").encode())


def read_lines(path: StoragePath) -> list[str]:
    """The lines `append_line` wrote to `path` (in write order for one writer), [] when there are none."""
    fs, p = _fs(path)
    lines = fs.cat_file(p).decode().splitlines() if fs.isfile(p) else []
    parts = f"{p}.d"
    if fs.isdir(parts):
        for part in sorted(fs.ls(parts, detail=False)):
            lines += fs.cat_file(part).decode().splitlines()
    return lines


def publish_dir(local_dir: Path, path: StoragePath, marker: str, marker_text: str) -> None:
    """Copy a local directory to `path` with `marker` written last, so a directory holding the marker is
    complete. On local disk the copy is renamed into place whole."""
    fs, p = _fs(path)
    if isinstance(fs, LocalFileSystem):
        tmp = Path(f"{p}.tmp-{uuid.uuid4().hex}")
        shutil.copytree(local_dir, tmp)
        (tmp / marker).write_text(marker_text)
        try:
            os.replace(tmp, p)
        except OSError:  # another process published it first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            if not (Path(p) / marker).exists():
                raise
        return
    fs.makedirs(p, exist_ok=True)
    for f in sorted(Path(local_dir).iterdir()):
        write_bytes(join(path, f.name), f.read_bytes())
    write_bytes(join(path, marker), marker_text.encode())


def fetch_dir(path: StoragePath, local_dir: Path) -> Path:
    """A local directory with the files of `path`: the directory itself on local disk, else a copy in
    `local_dir`."""
    fs, p = _fs(path)
    if isinstance(fs, LocalFileSystem):
        return Path(p)
    local_dir.mkdir(parents=True, exist_ok=True)
    for remote in fs.ls(p, detail=False):
        (local_dir / remote.rsplit("/", 1)[-1]).write_bytes(fs.cat_file(remote))
    return local_dir
