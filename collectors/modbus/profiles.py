"""Meter profiles: register maps of real meter models, as data files with their sources.

Each `profiles/<id>.toml` names the manual it comes from (title, version) and whether every
point was checked against it (`verified`); see profiles/README.md. A site's meter can name a
profile instead of listing registers:

    profile = "eastron-sdm630"
    profile_points = ["active_energy_import", "active_power"]   # optional; default: the
                                                                # profile's default_points
"""

from __future__ import annotations

import functools
import tomllib
from decimal import Decimal
from importlib import resources
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator

from collectors.modbus.decode import ByteOrder, DataType
from collectors.modbus.points import FunctionCode, ModbusPoint
from gateway.errors import TanjiError
from gateway.models import Frozen, PointKind, Quantity, in_range


class ProfileSource(Frozen):
    title: str = Field(min_length=1)
    version: str = Field(min_length=1)
    publisher: str = Field(min_length=1)
    url: str | None = None
    section: str | None = None
    secondary: tuple[str, ...] = ()


class ProfileDevice(Frozen):
    function_code: FunctionCode = 3
    word_order: ByteOrder = "ABCD"
    max_registers_per_request: Annotated[int, in_range(1, 125)] | None = None
    default_points: tuple[str, ...] = Field(min_length=1)


class ProfilePoint(Frozen):
    name: str
    quantity: Quantity
    kind: PointKind
    address: Annotated[int, in_range(0, 65535)]
    function_code: FunctionCode | None = None
    data_type: DataType
    word_order: ByteOrder | None = None
    scale: Decimal = Decimal(1)
    offset: Decimal = Decimal(0)
    bit: int | None = None
    bit_count: int = 1
    source_ref: str = Field(min_length=1, description="where in the source this point is")


class Profile(Frozen):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    manufacturer: str
    model: str
    verified: bool
    notes: str = ""
    source: ProfileSource
    device: ProfileDevice
    points: tuple[ProfilePoint, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        names = [p.name for p in self.points]
        if len(set(names)) != len(names):
            raise ValueError("point names must be unique")
        unknown = set(self.device.default_points) - set(names)
        if unknown:
            raise ValueError(f"default_points not in points: {sorted(unknown)}")
        self.modbus_points(names)  # every point must also be a valid ModbusPoint
        return self

    def modbus_points(self, names: tuple[str, ...] | list[str] | None = None) -> list[ModbusPoint]:
        """The named points (default: `default_points`) as configured Modbus points."""
        wanted = list(self.device.default_points if names is None else names)
        by_name = {p.name: p for p in self.points}
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise ValueError(
                f"profile {self.id!r} has no point {missing[0]!r}; it has: {', '.join(by_name)}"
            )
        return [self._modbus_point(by_name[n]) for n in wanted]

    def _modbus_point(self, p: ProfilePoint) -> ModbusPoint:
        return ModbusPoint(
            name=p.name,
            quantity=p.quantity,
            kind=p.kind,
            unit=p.quantity.unit,
            address=p.address,
            function_code=p.function_code or self.device.function_code,
            data_type=p.data_type,
            word_order=p.word_order or self.device.word_order,
            scale=p.scale,
            offset=p.offset,
            bit=p.bit,
            bit_count=p.bit_count,
        )


class ProfileError(TanjiError, ValueError):
    pass


def profile_ids() -> list[str]:
    folder = resources.files("collectors.modbus") / "profiles"
    return sorted(
        f.name.removesuffix(".toml") for f in folder.iterdir() if f.name.endswith(".toml")
    )


@functools.cache
def load_profile(profile_id: str) -> Profile:
    """The profile with this id; ProfileError names the known ids when there is none."""
    if profile_id not in profile_ids():
        raise ProfileError(f"unknown profile {profile_id!r}; known: {', '.join(profile_ids())}")
    text = (resources.files("collectors.modbus") / "profiles" / f"{profile_id}.toml").read_text(
        encoding="utf-8"
    )
    try:
        profile = Profile.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ProfileError(f"profile {profile_id!r} is invalid: {exc}") from None
    if profile.id != profile_id:
        raise ProfileError(f"profile file {profile_id}.toml declares id {profile.id!r}")
    return profile


@functools.lru_cache(maxsize=256)
def _profile_points(profile_id: str, names: tuple[str, ...] | None) -> tuple[ModbusPoint, ...]:
    """Validated points, shared by every meter of the same profile and selection (pydantic
    keeps model instances as they are, so 1000 meters of one model hold one set of points)."""
    return tuple(load_profile(profile_id).modbus_points(list(names) if names is not None else None))


def expand_profile(data: Any) -> Any:
    """Before validation of a device: put the named profile's points in front of any `points`
    the site lists itself, and take its request-size limit unless the site sets one."""
    if not isinstance(data, dict) or data.get("profile") is None:
        return data
    profile = load_profile(str(data["profile"]))
    names = data.get("profile_points")
    points = _profile_points(profile.id, tuple(names) if names is not None else None)
    out = {**data, "points": [*points, *data.get("points", [])]}
    if profile.device.max_registers_per_request and "max_registers_per_request" not in data:
        out["max_registers_per_request"] = profile.device.max_registers_per_request
    return out
