"""Content-addressed cache of arrays (relabelled rewards, encoder checkpoints) on any fsspec filesystem.

An entry is `<key>.npz` (numpy, loaded with allow_pickle=False) plus `<key>.json` holding its sha256 and
metadata. The JSON is written last, each file via temp name + rename, so a crash never leaves an entry that
reads as valid; a corrupted or truncated entry fails its checksum, is reported, and counts as a miss.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import uuid
from typing import Any

import fsspec
import numpy as np

from ailot.errors import AilotInputError

log = logging.getLogger(__name__)
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # one file name: no '/', no '..', never outside root


def content_key(*parts: Any) -> str:
    """A stable sha256 key of JSON-serialisable parts (sorted keys), shortened to 32 hex digits."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ArrayCache:
    """Arrays stored by key under `root` (a local directory or a URI such as s3://bucket/path)."""

    def __init__(self, root: str):
        self.root = str(root).rstrip("/")
        self.fs, self.path = fsspec.core.url_to_fs(self.root)
        self.fs.makedirs(self.path, exist_ok=True)

    def _file(self, key: str, ext: str) -> str:
        if not isinstance(key, str) or not _KEY.match(key):
            raise AilotInputError(f"cache key {key!r}", f"is not a plain file name, so it could leave {self.root}",
                                  "use content_key(...) or letters, digits, '_', '.', '-'")
        return f"{self.path}/{key}.{ext}"

    def _write_atomic(self, target: str, data: bytes) -> None:
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, target)

    def put(self, key: str, arrays: dict[str, np.ndarray], meta: dict | None = None) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        data = buf.getvalue()
        self._write_atomic(self._file(key, "npz"), data)
        record = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "meta": meta or {}}
        self._write_atomic(self._file(key, "json"), json.dumps(record, default=str).encode())

    def contains(self, key: str) -> bool:
        return self.fs.exists(self._file(key, "json"))

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The entry's arrays, or None when absent or failing its checksum (which is logged)."""
        if not self.contains(key):
            return None
        try:
            record = json.loads(self.fs.cat_file(self._file(key, "json")))
            data = self.fs.cat_file(self._file(key, "npz"))
        except (OSError, ValueError) as exc:
            log.warning("cache entry %s unreadable (%s); recomputing", key, exc)
            return None
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            log.warning("cache entry %s failed its checksum (corrupted or truncated); recomputing", key)
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def meta(self, key: str) -> dict | None:
        if not self.contains(key):
            return None
        return json.loads(self.fs.cat_file(self._file(key, "json"))).get("meta")
