"""Numbers read from configs and the command line. YAML reads `1e-2` (no dot) as a string, so every place that
takes a number accepts a string that spells one; these two helpers are the one definition of that."""

from __future__ import annotations

import math
import re
from typing import Any

from ailot.errors import AilotInputError

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def as_number(value: Any) -> Any:
    """`value` as a float when it is a string that spells a finite number (e.g. '1e-2'), else unchanged."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return value


def finite_number(value: Any, where: str, kind: type = float) -> float | int:
    """`value` (or the number its string spells) as a finite `kind`; else a clear error naming config key `where`."""
    number = as_number(value)
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) or (
            kind is int and number != int(number)):
        whole = "whole " if kind is int else ""
        raise AilotInputError(f"config key {where!r}", f"must be a finite {whole}number, got {value!r}",
                              f"give a {whole}number")
    return kind(number)
