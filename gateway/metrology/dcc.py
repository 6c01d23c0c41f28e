"""PTB Digital Calibration Certificates (DCC, XML schema 3.3.0) -> calibration records.

The file is validated against the DCC XSD shipped in gateway/data/dcc/ (offline: the
schema's remote imports are mapped to the local copies, the network is never used), then
mapped: certificate number <- administrativeData/coreData/uniqueIdentifier; laboratory <-
calibrationLaboratory/contact/name/content (its code <- calibrationLaboratoryCode); calibration
date <- coreData/endPerformanceDate; the meter <- the site meter whose serial number is one of
items/item/identifications/identification/value; result <- `fail` if any conformity statement
says so; expanded uncertainty and coverage factor <- the first si:expandedUnc(XMLList) or
si:expandedMU in the measurement results. The file's SHA-256 goes into the record. A DCC has
no due date (the owner sets the recalibration interval, not the laboratory): it is given
with the import. Anything needed that the file does not hold is an error naming the element.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from xml.etree import ElementTree

import xmlschema

from gateway.errors import TanjiError
from gateway.models import CalibrationRecord

SCHEMA_DIR = Path(__file__).parent.parent / "data" / "dcc"
SCHEMA_VERSION = "3.3.0"
NS = {"dcc": "https://ptb.de/dcc", "si": "https://ptb.de/si"}
# the XSDs' remote imports, answered from the shipped copies (gateway/data/dcc/SOURCES.md)
LOCAL_COPIES = {
    "https://ptb.de/si/v2.2.1/SI_Format.xsd": SCHEMA_DIR / "SI_Format.xsd",
    "https://www.ptb.de/dcc/d-sig/xmldsig-core-schema.xsd": SCHEMA_DIR / "xmldsig-core-schema.xsd",
    "https://www.ptb.de/si/v2.2.1/qudt/quantitykind.xsd": SCHEMA_DIR / "quantitykind.xsd",
}


# the XSD's conformity values that are not a pass (stringConformityStatementStatusType)
FAILING = {"fail", "conditionalfail", "nopass"}


class DccError(TanjiError, ValueError):
    """The file is not a DCC tanji can register; the message names the element."""


@functools.cache
def schema() -> xmlschema.XMLSchema:
    """The DCC schema with its imports, from the shipped files (loading takes about 1 s)."""
    return xmlschema.XMLSchema(
        str(SCHEMA_DIR / "dcc.xsd"),
        uri_mapper=lambda url: str(LOCAL_COPIES[url]) if url in LOCAL_COPIES else url,
        allow="local",
    )


def read_dcc(
    content: bytes, due_date: date, serials: Mapping[str, str]
) -> tuple[str, CalibrationRecord]:
    """(meter id, certificate) from a DCC file's bytes; `serials` maps each site meter's
    serial number to its id."""
    root = _valid_root(content)
    core = "dcc:administrativeData/dcc:coreData"
    number = _text(root, f"{core}/dcc:uniqueIdentifier")
    lab = _text(
        root, "dcc:administrativeData/dcc:calibrationLaboratory/dcc:contact/dcc:name/dcc:content"
    )
    code = root.findtext(
        "dcc:administrativeData/dcc:calibrationLaboratory/dcc:calibrationLaboratoryCode", None, NS
    )
    performed = _text(root, f"{core}/dcc:endPerformanceDate")
    meter = _meter_of(root, serials)
    failed = _fails(root)
    uncertainty, factor = _expanded_uncertainty(root)
    standard, standard_cert, standard_lab = _reference_standard(root)
    try:
        return meter, CalibrationRecord(
            certificate_no=number,
            kind="calibration",
            lab=lab,
            accreditation_no=code,
            calibration_date=date.fromisoformat(performed),
            due_date=due_date,
            result="fail" if failed else "pass",
            expanded_uncertainty=uncertainty,
            coverage_factor=factor,
            reference_standard=standard,
            reference_standard_certificate=standard_cert,
            reference_standard_lab=standard_lab,
            dcc_sha256=hashlib.sha256(content).hexdigest(),
        )
    except ValueError as exc:  # e.g. a due date before the calibration
        raise DccError(f"{core}/dcc:endPerformanceDate {performed}: {exc}") from None


def _valid_root(content: bytes) -> ElementTree.Element:
    """The root of a well-formed DCC of SCHEMA_VERSION, valid against its schema."""
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as exc:
        raise DccError(f"not well-formed XML: {exc}") from None
    if root.tag != f"{{{NS['dcc']}}}digitalCalibrationCertificate":
        raise DccError(f"root element is {root.tag}, not dcc:digitalCalibrationCertificate")
    version = root.get("schemaVersion")
    if version != SCHEMA_VERSION:
        raise DccError(f"schemaVersion is {version!r}; tanji reads DCC {SCHEMA_VERSION}")
    try:
        errors = list(schema().iter_errors(io.BytesIO(content)))
    except Exception as exc:  # xmlschema's own resource errors, e.g. an encoding it refuses
        raise DccError(f"cannot be checked against the DCC schema: {exc}") from None
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        reason = " ".join((first.reason or str(first)).split())
        raise DccError(
            f"not valid against the DCC {SCHEMA_VERSION} schema: {first.path}: {reason}{more}"
        )
    return root


def _meter_of(root: ElementTree.Element, serials: Mapping[str, str]) -> str:
    """The one site meter whose serial number the certificate's items name."""
    found = [
        (v.text or "").strip()
        for v in root.iterfind(
            "dcc:administrativeData/dcc:items/dcc:item/dcc:identifications/dcc:identification/dcc:value",
            NS,
        )
    ]
    meters = sorted({serials[s] for s in found if s in serials})
    if len(meters) != 1:
        raise DccError(
            "dcc:administrativeData/dcc:items/dcc:item/dcc:identifications: "
            + (
                f"the identifications ({', '.join(found) or 'none'}) match no meter's serial"
                f" number in the site ({', '.join(sorted(serials)) or 'none'})"
                if not meters
                else f"the identifications match several meters ({', '.join(meters)})"
            )
        )
    return meters[0]


def _fails(root: ElementTree.Element) -> bool:
    """Whether any conformity statement (or list item) is not a pass: the result is `fail`."""
    statements = [
        word.lower()
        for name in ("conformity", "conformityXMLList")
        for c in root.iter(f"{{{NS['dcc']}}}{name}")
        for word in (c.text or "").split()
    ]
    return any(w in FAILING for w in statements)


def _text(root: ElementTree.Element, path: str) -> str:
    text = (root.findtext(path, None, NS) or "").strip()
    if not text:
        raise DccError(f"{path}: missing or empty; tanji needs it for the calibration record")
    return text


def _content(element: ElementTree.Element | None) -> str | None:
    """A dcc:textType's English content (else its first)."""
    if element is None:
        return None
    contents = element.findall("dcc:content", NS)
    chosen = next((c for c in contents if c.get("lang") == "en"), contents[0] if contents else None)
    text = (chosen.text or "").strip() if chosen is not None else ""
    return text or None


def _reference_standard(root: ElementTree.Element) -> tuple[str | None, str | None, str | None]:
    """The standard the item was compared with (the measuring equipment marked as the normal
    used, else the first listed): its name, its certificate's id and who issued it."""
    equipment = root.findall(
        "dcc:measurementResults/dcc:measurementResult/dcc:measuringEquipments/"
        "dcc:measuringEquipment",
        NS,
    )
    chosen = next(
        (e for e in equipment if "normalUsed" in (e.get("refType") or "")),
        equipment[0] if equipment else None,
    )
    if chosen is None:
        return None, None, None
    certificate = chosen.find("dcc:certificate", NS)
    number = certificate.findtext("dcc:referralID", None, NS) if certificate is not None else None
    referral = certificate.find("dcc:referral", NS) if certificate is not None else None
    return _content(chosen.find("dcc:name", NS)), (number or "").strip() or None, _content(referral)


def _local(element: ElementTree.Element) -> str:
    return element.tag.rpartition("}")[2]


def _expanded_uncertainty(root: ElementTree.Element) -> tuple[str | None, float | None]:
    """The first expanded uncertainty stated in the results: ("value unit", k)."""
    for quantity in root.iter():
        parts = {_local(c): c for c in quantity}
        expanded = next(
            (parts[n] for n in ("expandedUnc", "expandedUncXMLList", "expandedMU") if n in parts),
            None,
        )
        if expanded is None:
            continue
        fields = {_local(c): (c.text or "").strip() for c in expanded}
        value = (
            fields.get("uncertainty")
            or fields.get("uncertaintyXMLList")
            or fields.get("valueExpandedMU", "")
        )
        k = fields.get("coverageFactor") or fields.get("coverageFactorXMLList", "")
        unit = next(
            ((c.text or "").strip() for n, c in parts.items() if n in ("unit", "unitXMLList")), ""
        )
        if value:
            try:
                factor = float(k.split()[0]) if k else None
            except ValueError:
                factor = None
            return " ".join(x for x in (value, unit) if x), factor
    return None, None
