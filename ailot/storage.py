"""Paths under a sweep's storage: a local directory or any fsspec URI (s3://, gs://, file://, memory://).

Local paths stay `pathlib.Path`; URIs stay strings, because pathlib folds 's3://bucket' into 's3:/bucket' (a
local directory named 's3:'). Every write publishes whole files: a reader sees the old file or the new one.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

StoragePath = Path | str


def is_uri(path: StoragePath) -> bool:
    return "://" in str(path)


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
