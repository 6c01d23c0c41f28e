"""Site configuration (site.toml): the enterprise, its meters, the store, aggregation, and the
platform link (`[platform]`, `[delivery]` and the transport's section).

Loading never raises a traceback at the user: every problem becomes a ConfigProblem with the
field path (e.g. `meters[2].points[0].address`) and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from cloud_sync import (
    DeliveryConfig,
    HttpsConfig,
    LegacyPolicy,
    LinkConfig,
    MqttConfig,
    PlatformConfig,
)
from collectors import collector_types
from gateway import problems
from gateway.activity.balance import BalanceConfig
from gateway.activity.factors import FactorError, FactorsConfig, FactorSet
from gateway.models import (
    CONFIG_DIR,
    CalibrationRecord,
    Carrier,
    ConfigBool,
    ConfigFloat,
    ConfigPath,
    DeviceSpec,
    Frozen,
    LineShare,
    Meter,
    MeterReplacement,
    PointKind,
    PointSpec,
)
from gateway.periods import Interval, fixed_offset_problem
from gateway.problems import ConfigError as ConfigError  # the error of a site configuration
from gateway.problems import ConfigProblem as ConfigProblem
from gateway.store.mirror import MirrorConfig
from gateway.uscc import uscc_problem

RATED_POWER_LIMIT_KW = Decimal(10_000_000)  # 10 GW: above any one meter's circuit


class Enterprise(Frozen):
    name: str = Field(min_length=1)
    uscc: str = Field(description="unified social credit code, GB 32100")

    @field_validator("uscc")
    @classmethod
    def _valid_uscc(cls, v: str) -> str:
        problem = uscc_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class MeterFields(Frozen):
    """Identity and metrology of a configured meter (the protocol part is mixed in)."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    serial: str = Field(min_length=1)
    model: str = Field(min_length=1)
    carrier: Carrier
    accuracy_class: str = Field(min_length=1)
    required_accuracy_class: str | None = Field(
        default=None,
        min_length=1,
        description="the class GB 17167 requires for this meter's carrier and position, as the"
        " site reads the standard (tanji has no sourced copy of its table)",
    )
    location: str | None = None
    line: str | None = Field(default=None, min_length=1, description="the line it serves")
    lines: dict[str, Annotated[Decimal, Field(gt=0, le=1)]] | None = Field(
        default=None, description="the lines a shared meter serves, with fractions summing to 1"
    )
    calibration: CalibrationRecord | None = None
    rated_power_kw: Decimal | None = Field(
        default=None,
        gt=0,
        le=RATED_POWER_LIMIT_KW,
        description="energy steps faster than 1.2 x this are implausible",
    )
    replacements: tuple[MeterReplacement, ...] = ()

    @model_validator(mode="after")
    def _allocation(self) -> MeterFields:
        if self.line is not None and self.lines is not None:
            raise ValueError("give either `line` (one line) or `lines` (fractions), not both")
        if self.lines is not None:
            if not self.lines:
                raise ValueError("lines: name at least one line with its fraction")
            for line, fraction in self.lines.items():
                if not 0 < fraction <= 1:
                    raise ValueError(f"lines.{line}: fraction {fraction} is not in (0, 1]")
            if sum(self.lines.values()) != 1:
                raise ValueError(
                    f"lines: fractions add up to {sum(self.lines.values())}, not 1; give the"
                    " rest to a line of its own (e.g. `site-common`) so nothing is left out"
                )
        return self

    def allocation(self) -> tuple[LineShare, ...]:
        if self.lines is not None:
            return tuple(LineShare(line=k, fraction=v) for k, v in sorted(self.lines.items()))
        return (LineShare(line=self.line, fraction=Decimal(1)),) if self.line else ()

    def meter(self) -> Meter:
        return Meter(
            id=self.id,
            serial=self.serial,
            model=self.model,
            carrier=self.carrier,
            accuracy_class=self.accuracy_class,
            location=self.location,
            line=self.line,
            allocation=self.allocation(),
            calibrations=(self.calibration,) if self.calibration else (),
            replacements=self.replacements,
            rated_power_kw=self.rated_power_kw,
        )


def _meter_models() -> tuple[type[MeterFields], ...]:
    """One meter model per registered protocol: MeterFields + that protocol's DeviceSpec."""
    from pydantic import create_model

    return tuple(
        create_model(
            f"{ct.device_model.__name__}Meter",
            __base__=(MeterFields, ct.device_model),  # type: ignore[arg-type]
        )
        for ct in collector_types().values()
    )


if TYPE_CHECKING:

    class MeterConfig(MeterFields, DeviceSpec):
        """A configured meter: identity + protocol, connection and points."""

else:
    MeterConfig = Annotated[Union[_meter_models()], Field(discriminator="protocol")]  # noqa: UP007


class StoreConfig(Frozen):
    path: ConfigPath = Path("tanji.db")
    commit_interval_s: ConfigFloat = Field(default=1.0, ge=0.01, le=60)
    retention_days: ConfigFloat = Field(
        default=400,
        ge=0.001,
        le=36500,
        description="raw readings older than this go once acknowledged",
    )
    max_disk_mb: ConfigFloat = Field(
        default=10240,
        ge=16,
        le=100_000_000,
        description="hard cap on the store file (with its WAL)",
    )


class AggregationConfig(Frozen):
    interval: str = Field(
        default="15min", description="15min, 30min, hour, day, month, or e.g. 10s dividing a day"
    )
    timezone: str = "Asia/Shanghai"
    gap_limit_s: ConfigFloat | None = Field(
        default=None,
        ge=0.01,
        le=31 * 86400,
        description="pairs of readings further apart count as a gap",
    )
    grace_s: ConfigFloat = Field(default=5.0, ge=0, le=3600)
    send_without_valid_calibration: ConfigBool = Field(
        default=True,
        description="false: records of periods without a valid calibration are held, not sent",
    )

    @field_validator("interval")
    @classmethod
    def _known_interval(cls, v: str) -> str:
        return Interval.parse(v).name

    @property
    def period(self) -> Interval:
        return Interval.parse(self.interval)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            zone = ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        problem = fixed_offset_problem(zone)
        if problem:
            raise ValueError(problem)
        return v


class LineConfig(Frozen):
    """A production line; meters name it in `line` or `lines`."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str | None = None


class SiteMqttConfig(MqttConfig, LegacyPolicy):
    """`[mqtt]` as a site file gives it: the broker, and from files older than `[delivery]`
    the delivery policy, which SiteConfig moves to `delivery` (errors still name `mqtt.`)."""


class SiteConfig(Frozen):
    enterprise: Enterprise
    gateway_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    lines: tuple[LineConfig, ...] = Field(
        default=(), description="when given, every line a meter names must be one of these"
    )
    meters: tuple[MeterConfig, ...] = Field(min_length=1)
    store: StoreConfig = StoreConfig()
    aggregation: AggregationConfig = AggregationConfig()
    platform: PlatformConfig = PlatformConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    # the transports' sections; `platform.transport` names the one in use (`link`)
    mqtt: SiteMqttConfig = SiteMqttConfig()
    https: HttpsConfig | None = None  # [platform] transport = "https"
    mirror: MirrorConfig | None = None
    factors: FactorsConfig = FactorsConfig()
    balances: tuple[BalanceConfig, ...] = Field(
        default=(), description="main meters and their sub-meters, checked per period"
    )

    @property
    def link(self) -> LinkConfig:
        """The section of the transport `[platform] transport` names."""
        if self.platform.transport == "https" and self.https is not None:
            return self.https
        return self.mqtt

    @model_validator(mode="after")
    def _link_section(self) -> SiteConfig:
        if self.platform.transport == "https" and self.https is None:
            raise ValueError(
                'platform.transport = "https" needs an [https] section with the platform\'s'
                ' url (e.g. url = "https://platform.example.cn:8443"), and cert_file and'
                " key_file when the platform requires a client certificate (mutual TLS)"
            )
        return self

    @property
    def moved_policy(self) -> tuple[str, ...]:
        """Delivery settings this (older) file gives under `[mqtt]`; they belong in
        `[delivery]` and are taken from there into `delivery`."""
        return tuple(self.mqtt.given_policy())

    @property
    def unrated_counters(self) -> tuple[str, ...]:
        """Counters (`meter.point`) without a rating to judge their steps by (rated_power_kw
        of the meter for kWh, or max_rate_per_h of the point): gateway/activity/counters.py
        judges them by the meter's own recent rate, which may refuse a short burst from idle."""
        return tuple(
            f"{m.id}.{p.name}"
            for m in self.meters
            for p in m.points
            if p.kind is PointKind.COUNTER
            and p.max_rate_per_h is None
            and (m.rated_power_kw is None or p.unit != "kWh")
        )

    @model_validator(mode="after")
    def _policy_in_delivery(self) -> SiteConfig:
        """Site files older than `[delivery]` give its settings under `[mqtt]`: still taken,
        unless `[delivery]` gives the same setting too (which one would count?)."""
        moved = self.moved_policy
        both = [k for k in moved if k in self.delivery.model_fields_set]
        if both:
            raise ValueError(
                f"{', '.join(both)}: given both under [mqtt] (as older site files did) and"
                " under [delivery], where delivery settings belong now; remove"
                f" {'it' if len(both) == 1 else 'them'} from [mqtt]"
            )
        if moved:
            delivery = self.delivery.model_copy(update=self.mqtt.given_policy())
            object.__setattr__(self, "delivery", delivery)  # as if written in [delivery]
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> SiteConfig:
        seen: set[str] = set()
        for m in self.meters:
            if m.id in seen:
                raise ValueError(f"meter id {m.id!r} is used twice")
            seen.add(m.id)
            names = [p.name for p in m.points]
            for r in m.replacements:
                if r.point not in names:
                    raise ValueError(
                        f"meter {m.id!r}: replacement at {r.at.isoformat()} names point"
                        f" {r.point!r}, which the meter does not have ({', '.join(names)})"
                    )
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(
                    f"meter {m.id!r} has two points named {sorted(dup)[0]!r}; give each a"
                    " distinct `name`"
                )
        return self

    @model_validator(mode="after")
    def _gap_limit_spans_polls(self) -> SiteConfig:
        """Readings of a meter that polls slower than the gap limit would all lie across
        gaps, where no glitch can be told (gateway/activity/counters.py)."""
        limit = self.aggregation.gap_limit_s
        slow = [
            m for m in self.meters if limit is not None and limit < 2 * m.connection.poll_interval_s
        ]
        if slow:
            m = max(slow, key=lambda m: m.connection.poll_interval_s)
            raise ValueError(
                f"aggregation.gap_limit_s = {limit:g} is less than twice the poll_interval_s"
                f" of meter {m.id} ({m.connection.poll_interval_s:g}): each of its readings"
                " would stand alone across a gap; raise it, or leave it out (3 x each"
                " meter's poll interval)"
            )
        return self

    @model_validator(mode="after")
    def _lines_known(self) -> SiteConfig:
        declared = [line.id for line in self.lines]
        if len(set(declared)) != len(declared):
            raise ValueError("lines: a line id is used twice")
        for m in self.meters:
            shares = m.allocation()
            unknown = [s.line for s in shares if declared and s.line not in declared]
            if unknown:
                raise ValueError(
                    f"meter {m.id!r} names line {unknown[0]!r}, which is not among the"
                    f" [[lines]] ({', '.join(declared)})"
                )
            counting = [p.name for p in m.points if p.product is not None]
            if counting and len(shares) != 1:
                raise ValueError(
                    f"meter {m.id!r}: point {counting[0]!r} counts a product, so the meter"
                    " must belong to exactly one line (`line = ...`)"
                )
        return self

    @model_validator(mode="after")
    def _balances_name_meters(self) -> SiteConfig:
        points = {m.id: {p.name for p in m.points} for m in self.meters}
        for i, b in enumerate(self.balances):
            for meter_id in (b.main, *b.subs):
                if meter_id not in points:
                    raise ValueError(f"balances[{i}]: no meter {meter_id!r}")
                if b.point not in points[meter_id]:
                    raise ValueError(f"balances[{i}]: meter {meter_id!r} has no point {b.point!r}")
        return self

    @model_validator(mode="after")
    def _share_identical_points(self) -> SiteConfig:
        """Meters that list identical points share one tuple of them: a site of 1000 meters
        of one model holds one set of point objects, not 1000 (about 2 KB per point)."""
        seen: dict[tuple[PointSpec, ...], tuple[PointSpec, ...]] = {}
        for m in self.meters:
            shared = seen.setdefault(m.points, m.points)
            if shared is not m.points:
                # equal value, only the identity changes; the models stay frozen to callers
                object.__setattr__(m, "points", shared)
        return self

    @model_validator(mode="after")
    def _factors_usable(self) -> SiteConfig:
        try:
            FactorSet(self.factors)
        except FactorError as exc:
            raise ValueError(f"factors: {exc}") from None
        return self

    @model_validator(mode="after")
    def _protocol_checks(self) -> SiteConfig:
        """Checks across devices that only the protocol understands (e.g. a shared bus)."""
        checks = {ct.check_devices for ct in collector_types().values()}
        devices = [(m.id, m) for m in self.meters]
        problems = [p for check in checks for p in check(devices)]
        if problems:
            raise ValueError("; ".join(problems))
        return self


# --- loading with readable errors ------------------------------------------------------------


def problems_from(exc: ValidationError) -> list[ConfigProblem]:
    """Every problem in a site configuration, by field path (gateway/problems.py)."""
    return problems.problems_from(exc, tuple(collector_types()))


def parse_site_config(
    data: dict[str, Any], source: str = "<config>", config_dir: Path | None = None
) -> SiteConfig:
    """A site configuration from its TOML data; relative paths in it are relative to
    `config_dir` when given (else as written). Raises ConfigError listing every problem."""
    context = {CONFIG_DIR: config_dir} if config_dir is not None else None
    try:
        return SiteConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(source, problems_from(exc)) from None


def load_site_config(path: Path) -> SiteConfig:
    """Read and validate a site.toml; raises ConfigError (never anything else) on bad input."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [ConfigProblem("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read: {exc}")]) from None
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise ConfigError(str(path), [ConfigProblem("", f"not valid TOML: {exc}")]) from None
    # the files it names (store, certificates, keys, passwords) are relative to its folder
    return parse_site_config(data, str(path), config_dir=path.parent)


# --- what the run needs from this machine ------------------------------------------------------


def store_path_problem(path: Path) -> str | None:
    """Why the gateway cannot keep its store at `path`, or None: it must be a file this user
    can read and write, or one it can create (missing folders are created), in a folder it
    can write (SQLite keeps its -wal and -shm files next to the store)."""
    try:
        if path.is_dir():
            return f"{path} is a folder; name the store file in it, e.g. {path / 'tanji.db'}"
        if path.exists():
            if not path.is_file():
                return f"{path} is not a regular file"
            if not os.access(path, os.R_OK | os.W_OK):
                return f"{path} cannot be read and written by this user"
            folder = path.parent
        else:
            folder = path.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if not folder.is_dir():
                return f"cannot create {path}: {folder} is a file, not a folder"
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create files in {folder} (the store, its -wal and -shm files)"
    return None


def deployment_problems(config: SiteConfig) -> list[ConfigProblem]:
    """What the schema cannot see and the run needs from this machine: a store file it can
    write or create, the platform link's CA, certificate, key, password (file or
    environment variable) and the platform's ack-verification key readable, that key
    given unless the broker is on this machine, and the files each meter's protocol reads
    (an OPC UA certificate, key, trust folder, password file). Both `tanji check-config`
    and `tanji run` ask this (through `check_site`), so the run refuses to start on what
    check-config reports."""
    problems: list[ConfigProblem] = []
    store = store_path_problem(config.store.path)
    if store:
        problems.append(ConfigProblem("store.path", store))
    section = config.platform.transport
    problems += [ConfigProblem(section, problem) for problem in config.link.problems()]
    unsigned = config.link.unsigned_acks_problem()  # acks anyone could forge
    if unsigned:
        problems.append(ConfigProblem(f"{section}.platform_ack_key", unsigned))
    types = collector_types()
    for i, meter in enumerate(config.meters):  # e.g. an OPC UA certificate, key, password file
        for field, problem in types[meter.protocol].deployment_problems(meter):
            problems.append(ConfigProblem(f"meters[{i}].{field}", problem))
    return problems


def site_notes(config: SiteConfig) -> list[str]:
    """What is allowed but worth a word to whoever runs the site: `tanji check-config` prints
    these and `tanji run` logs them as warnings when it starts."""
    notes = []
    link, section = config.link, config.platform.transport
    if link.platform_ack_key is None:  # allowed for a platform link on this machine only
        notes.append(
            f"[{section}] platform_ack_key is not set: the platform's acks are not"
            f" authenticated (allowed because the {link.peer} is on this machine)"
        )
    notes += [f"[{section}] {note}" for note in link.notes()]
    if config.https is not None and section != "https":
        notes.append(
            f'[https] is given but not used: [platform] transport is "{section}"'
            ' (set transport = "https" to deliver over HTTPS)'
        )
    if config.moved_policy:  # an older site file: still read, but not where it belongs
        notes.append(
            f"[mqtt] {', '.join(config.moved_policy)}: delivery settings, now in [delivery]"
            " (any transport); read from [mqtt] for this file, move them to [delivery]"
            " (docs/configuration.md)"
        )
    if config.unrated_counters:  # judged by the meter's own recent rate (activity/counters.py)
        notes.append(
            f"no rating for the counter(s) {', '.join(config.unrated_counters)}"
            " (rated_power_kw of the meter for kWh, or max_rate_per_h of the point): their"
            " steps are judged from the meter's own recent rate, which may refuse a short"
            " burst from idle (docs/configuration.md)"
        )
    return notes


def check_site(path: Path) -> SiteConfig:
    """The site configuration at `path` with everything `tanji run` needs checked: the file
    (load_site_config) and this machine (deployment_problems). Raises ConfigError listing
    every problem."""
    config = load_site_config(path)
    problems = deployment_problems(config)
    if problems:
        raise ConfigError(str(path), problems)
    return config
