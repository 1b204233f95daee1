"""A registry of named classes, each written as one line "name": "module:Class" and imported on first use:
adding a labeller or learner is its file plus that line, and reading the names imports none of them."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping


class Registry(Mapping[str, type]):
    def __init__(self, package: str, entries: dict[str, str]):
        self.package, self.entries = package, dict(entries)
        self._loaded: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        if name not in self._loaded:
            module, _, attr = self.entries[name].partition(":")  # KeyError for an unknown name, as a dict
            self._loaded[name] = getattr(importlib.import_module(f"{self.package}.{module}"), attr)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries
