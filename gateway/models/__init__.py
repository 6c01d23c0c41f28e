"""The domain model every stage shares: quantities, readings, meters, calibration, activity data.

Pure pydantic v2 models, frozen. No I/O here; collectors may import this package and nothing
else from the gateway, and should import it by this name, not its modules: `fields` (the
frozen base, configuration field types), `readings` (the vocabulary, `Reading`), `meters`
(meters and calibration), `devices` (the bases of device configuration), `activity`
(`ActivityRecord`). The modules import only each other, in that order.
"""

from gateway.models.activity import (
    ActivityFlag,
    ActivityRecord,
    BoundaryValue,
    DataQuality,
    Uncertainty,
)
from gateway.models.devices import (
    POINT_NAME,
    ConnectionSpec,
    DeviceSpec,
    PointSpec,
    float_step,
    scale_problem,
)
from gateway.models.fields import (
    CONFIG_DIR,
    SCALE_LIMIT,
    VALUE_LIMIT,
    WHOLE,
    ConfigBool,
    ConfigFileName,
    ConfigFloat,
    ConfigPath,
    Frozen,
    IntRange,
    in_range,
    shown,
    wrong_type,
)
from gateway.models.meters import (
    CalibrationRecord,
    CalibrationStatus,
    LineShare,
    Meter,
    MeterReplacement,
)
from gateway.models.readings import (
    LABEL_MAX_CHARS,
    LABEL_QUANTITIES,
    QUANTITY_UNITS,
    Carrier,
    HexBytes,
    NsTimestamp,
    PointKind,
    Quality,
    QualityStatus,
    Quantity,
    Reading,
    text_problem,
)

__all__ = [
    "CONFIG_DIR",
    "LABEL_MAX_CHARS",
    "LABEL_QUANTITIES",
    "POINT_NAME",
    "QUANTITY_UNITS",
    "SCALE_LIMIT",
    "VALUE_LIMIT",
    "WHOLE",
    "ActivityFlag",
    "ActivityRecord",
    "BoundaryValue",
    "CalibrationRecord",
    "CalibrationStatus",
    "Carrier",
    "ConfigBool",
    "ConfigFileName",
    "ConfigFloat",
    "ConfigPath",
    "ConnectionSpec",
    "DataQuality",
    "DeviceSpec",
    "Frozen",
    "HexBytes",
    "IntRange",
    "LineShare",
    "Meter",
    "MeterReplacement",
    "NsTimestamp",
    "PointKind",
    "PointSpec",
    "Quality",
    "QualityStatus",
    "Quantity",
    "Reading",
    "Uncertainty",
    "float_step",
    "in_range",
    "scale_problem",
    "shown",
    "text_problem",
    "wrong_type",
]
