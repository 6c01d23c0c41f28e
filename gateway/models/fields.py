"""The ground of the shared model: the frozen base of every model and the field types and
validators of configuration (whole numbers in a range, strict floats and booleans, the error
texts for a value of the wrong type). Pure: no I/O, nothing of tanji imported."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    ValidationInfo,
)


@dataclass(frozen=True)
class IntRange:
    """A whole number within lo..hi, as written: 502, not "502", 502.0 or true."""

    lo: int
    hi: int

    def __call__(self, v: Any) -> Any:
        if type(v) is not int:
            raise ValueError(wrong_type(v, f"a whole number {self.lo}..{self.hi}"))
        if not self.lo <= v <= self.hi:
            raise ValueError(f"must be {self.lo}..{self.hi} (got {shown(v)})")
        return v


def in_range(lo: int, hi: int) -> BeforeValidator:
    """`Annotated[int, in_range(0, 65535)]`: the error says 'must be 0..65535 (got 70000)';
    text, fractions and booleans are refused, not converted."""
    return BeforeValidator(IntRange(lo, hi))


def wrong_type(v: Any, expected: str) -> str:
    """The message for a TOML value of the wrong type: 'must be a whole number 1..65535
    without quotes (got '502')'."""
    if isinstance(v, bool):
        return f"must be {expected}, not true/false (got {str(v).lower()})"
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return f"must be {expected}, not text (got {shown(v)})"
        return f"must be {expected} without quotes (got {shown(v)})"
    return f"must be {expected} (got {shown(v)})"


def shown(v: Any, limit: int = 40) -> str:
    """A value as an error message quotes it: its repr, cut to `limit` characters (a number
    of 5000 digits is not echoed whole)."""
    if isinstance(v, int) and v.bit_length() > 4 * limit:  # repr() refuses > 4300 digits
        return f"a number of about {int(v.bit_length() * math.log10(2))} digits"
    text = repr(v)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _whole_number(v: Any) -> Any:
    """Lets only a true int through to a Literal of ints (pydantic would take 1.0 and true)."""
    if type(v) is not int:
        raise ValueError(wrong_type(v, "a whole number"))
    return v


WHOLE = BeforeValidator(_whole_number)
"""`Annotated[Literal[1, 2], WHOLE]`: a choice of whole numbers that refuses 1.0, "1" and true."""

ConfigFloat = Annotated[float, Strict(), AllowInfNan(False)]
"""A number in site.toml: a TOML integer or float, finite (no inf, nan), never text or a
boolean. Every use gives it a range (Field(ge=..., le=...))."""

ConfigBool = Annotated[bool, Strict()]
"""true or false in site.toml; never 1, "yes" or "true"."""

VALUE_LIMIT = Decimal("1e15")
"""Bound of a configured value in a quantity's unit (plausible limits, counter values at a
meter exchange, offsets, deadbands): far above any real meter (10**15 kWh), far below what
breaks arithmetic (a float overflows at 1.8e308)."""

SCALE_LIMIT = Decimal("1e12")
"""Bound of a point's |scale| (and 1/SCALE_LIMIT its smallest): register units to the
quantity's unit, e.g. 0.01 (10 Wh steps to kWh) or 1000 (MWh to kWh)."""


class Frozen(BaseModel):
    """Base for all domain models: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


CONFIG_DIR = "config_dir"  # validation context: the folder of the file being read


def _beside_config(path: Path, info: ValidationInfo) -> Path:
    """A relative path in a configuration file is relative to that file's folder (not to
    wherever the command was started: a service manager starts it in /)."""
    folder = (info.context or {}).get(CONFIG_DIR)
    if folder is None or path.is_absolute():
        return path
    return Path(folder) / path


def _name_beside_config(name: str, info: ValidationInfo) -> str:
    return str(_beside_config(Path(name), info)) if name else name


ConfigPath = Annotated[Path, AfterValidator(_beside_config)]
"""A file or folder named in a configuration file: relative to that file's folder when the
file is read with `context={CONFIG_DIR: its folder}` (gateway.config.load_site_config)."""
ConfigFileName = Annotated[str, AfterValidator(_name_beside_config)]
"""The same, for a field that keeps the name as text."""
