"""DCC import: a schema-valid certificate becomes a calibration record of the meter with its
serial number; a schema-invalid one and one that cannot be mapped are refused, naming the
element. Files and their origin: tests/data/dcc/SOURCES.md."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest

from gateway.metrology.dcc import DccError, read_dcc

DATA = Path(__file__).parents[1] / "data" / "dcc"
VALID = (DATA / "dcclib_valid.xml").read_bytes()
SERIAL = "string-manufacturer-item"  # the item's manufacturer serial number in that file


def test_a_valid_dcc_becomes_the_meters_calibration_record():
    meter, record = read_dcc(VALID, date(1958, 8, 13), {SERIAL: "M1", "other": "M2"})
    assert meter == "M1"
    assert record.certificate_no == "1234"
    assert record.lab == "Kalibrierfirma GmbH"
    assert record.calibration_date == date(1957, 8, 13)  # dcc:endPerformanceDate
    assert record.due_date == date(1958, 8, 13)
    assert record.result == "pass"
    assert record.expanded_uncertainty == "0.061 \\kelvin"
    assert record.coverage_factor == 2
    assert record.dcc_sha256 == hashlib.sha256(VALID).hexdigest()


def test_an_energy_meter_dcc_of_our_own():
    """The same certificate made out for an energy meter (serial and dates changed here) and
    stating a failed conformity: still schema-valid, recorded as failed."""
    ours = (
        VALID.replace(SERIAL.encode(), b"SIM-00001")
        .replace(b"1957-08-13", b"2026-03-01")
        .replace(b"<dcc:conformity>pass</dcc:conformity>", b"<dcc:conformity>fail</dcc:conformity>")
    )
    meter, record = read_dcc(ours, date(2027, 2, 28), {"SIM-00001": "L1-MAIN"})
    assert (meter, record.calibration_date, record.result) == ("L1-MAIN", date(2026, 3, 1), "fail")


def test_a_schema_invalid_dcc_is_refused_naming_the_element():
    invalid = (DATA / "nmlph_02-2025-FORC-0042_INVALID.xml").read_bytes()
    with pytest.raises(DccError) as info:
        read_dcc(invalid, date(2026, 1, 1), {"SN 1251056K0094": "M1"})
    message = str(info.value)
    assert "not valid against the DCC 3.3.0 schema" in message
    assert "dcc:coreData/dcc:endPerformanceDate" in message
    assert "more)" in message


def test_a_dcc_that_matches_no_meter_is_refused_naming_what_it_holds():
    with pytest.raises(DccError) as info:
        read_dcc(VALID, date(1958, 8, 13), {"SIM-00001": "L1-MAIN"})
    message = str(info.value)
    assert message.startswith("dcc:administrativeData/dcc:items/dcc:item/dcc:identifications:")
    assert SERIAL in message
    assert "SIM-00001" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"<not xml", "not well-formed XML"),
        (b"<a/>", "not dcc:digitalCalibrationCertificate"),
        (
            VALID.replace(b'schemaVersion="3.3.0"', b'schemaVersion="3.1.2"'),
            "tanji reads DCC 3.3.0",
        ),
        (
            VALID.replace(b"<dcc:uniqueIdentifier>1234</dcc:uniqueIdentifier>", b""),
            "not valid against the DCC 3.3.0 schema",
        ),
    ],
)
def test_other_bad_files(content: bytes, expected: str):
    with pytest.raises(DccError, match=expected):
        read_dcc(content, date(1958, 8, 13), {SERIAL: "M1"})


def test_a_due_date_before_the_calibration_is_refused():
    with pytest.raises(DccError, match="is before calibration_date"):
        read_dcc(VALID, date(1950, 1, 1), {SERIAL: "M1"})


@pytest.mark.parametrize("statement", ["conditionalFail", "noPass", "pass fail"])
def test_any_conformity_statement_short_of_a_pass_is_a_fail(statement: str):
    stated = VALID.replace(
        b"<dcc:conformityXMLList>pass</dcc:conformityXMLList>",
        f"<dcc:conformityXMLList>{statement}</dcc:conformityXMLList>".encode(),
    )
    assert read_dcc(stated, date(1958, 8, 13), {SERIAL: "M1"})[1].result == "fail"


def test_an_encoding_the_schema_check_cannot_read_is_a_clear_error():
    utf16 = VALID.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    try:
        meter, _ = read_dcc(utf16, date(1958, 8, 13), {SERIAL: "M1"})
    except DccError:
        return  # refused with a message, not a traceback
    assert meter == "M1"  # or read correctly


def test_the_reference_standard_and_its_certificate_come_from_the_measuring_equipment():
    demo = Path(__file__).parents[2] / "gateway" / "data" / "demo" / "M2.dcc.xml"
    meter, record = read_dcc(demo.read_bytes(), date(2027, 1, 1), {"SIM-00002": "M2"})
    assert meter == "M2"
    assert record.reference_standard == "three-phase electric energy standard (simulated)"
    assert record.reference_standard_certificate == "DEMO-STD-0001"
    assert record.reference_standard_lab == "demo national metrology institute (simulated)"
    assert record.accreditation_no == "CNAS L0000 (simulated)"
    assert (record.expanded_uncertainty, record.coverage_factor) == ("0.10 \\percent", 2.0)
