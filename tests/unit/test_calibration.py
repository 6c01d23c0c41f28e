"""The calibration registry and a meter's calibration status at a time: every status, a
certificate expiring mid-period, supersede and revoke, append-only storage, imports."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.config import ConfigError
from gateway.metrology.calibration import CalibrationError, Registry, read_certificates
from gateway.metrology.status import Entry, status_on, status_over
from gateway.models import CalibrationRecord, CalibrationStatus
from gateway.store.sqlite import Store

SH = ZoneInfo("Asia/Shanghai")
S = CalibrationStatus


def cert(no: str, start: str, due: str, result: str = "pass") -> CalibrationRecord:
    return CalibrationRecord(
        certificate_no=no,
        kind="verification",
        lab="Jiangsu Institute of Metrology (example)",
        calibration_date=date.fromisoformat(start),
        due_date=date.fromisoformat(due),
        result=result,  # type: ignore[arg-type]
    )


def entries(*certs: CalibrationRecord, revoked: dict[str, str] | None = None) -> list[Entry]:
    revoked = revoked or {}
    return [Entry(i, c, revoked.get(c.certificate_no)) for i, c in enumerate(certs)]


@pytest.mark.parametrize(
    ("day", "status", "deciding"),
    [
        ("2025-12-31", S.NOT_YET_VALID, None),
        ("2026-01-01", S.VALID, "A"),
        ("2026-12-31", S.VALID, "A"),  # the due date itself is covered
        ("2027-01-01", S.EXPIRED, "A"),
        ("2027-02-01", S.VALID, "B"),
    ],
)
def test_status_on_a_day(day, status, deciding):
    found, entry = status_on(
        entries(cert("A", "2026-01-01", "2026-12-31"), cert("B", "2027-02-01", "2028-01-31")),
        date.fromisoformat(day),
    )
    assert found is status
    assert (entry.record.certificate_no if entry else None) == deciding


def test_no_certificate_failed_and_revoked():
    assert status_on([], date(2026, 6, 1))[0] is S.NONE
    failed = entries(cert("F", "2026-01-01", "2026-12-31", result="fail"))
    assert status_on(failed, date(2026, 6, 1))[0] is S.FAILED
    old, new = cert("A", "2025-01-01", "2026-12-31"), cert("B", "2026-03-01", "2027-02-28")
    # the newer one was revoked: the older one still covers the day
    assert status_on(entries(old, new, revoked={"B": "wrong meter"}), date(2026, 6, 1)) == (
        S.VALID,
        Entry(0, old),
    )
    # revoked with nothing else covering the day
    assert status_on(entries(new, revoked={"B": "wrong meter"}), date(2026, 6, 1))[0] is S.REVOKED


def test_a_certificate_expiring_mid_period_makes_the_period_expired():
    one = entries(cert("A", "2026-01-01", "2026-11-15"))
    month = (datetime(2026, 11, 1, tzinfo=SH), datetime(2026, 12, 1, tzinfo=SH))
    status, entry = status_over(one, *month)
    assert status is S.EXPIRED
    assert entry is not None
    assert entry.record.certificate_no == "A"
    # a 15-minute period on the due date is still covered, the next day's is not
    assert (
        status_over(
            one, datetime(2026, 11, 15, 23, 45, tzinfo=SH), datetime(2026, 11, 16, tzinfo=SH)
        )[0]
        is S.VALID
    )
    assert (
        status_over(
            one, datetime(2026, 11, 16, tzinfo=SH), datetime(2026, 11, 16, 0, 15, tzinfo=SH)
        )[0]
        is S.EXPIRED
    )


@pytest.fixture
def registry(tmp_path: Path):
    store = Store(tmp_path / "g.db")
    yield Registry(store.conn)
    store.close()


def test_supersede_and_revoke_keep_the_history(registry: Registry):
    wrong = cert("JL-1", "2026-01-01", "2026-12-31")
    right = wrong.model_copy(update={"due_date": date(2027, 12, 31)})
    assert registry.add("M1", wrong, "site.toml", 1)
    assert not registry.add("M1", wrong, "site.toml", 2)  # the same again: nothing new
    with pytest.raises(CalibrationError, match="already registered with other content"):
        registry.add("M1", right, "site.toml", 3)
    registry.supersede("M1", "JL-1", right, "due date mistyped", "cli", 4)
    assert [(e.record.due_date.year, e.revoked) for e in registry.entries("M1")] == [
        (2026, "superseded: due date mistyped"),
        (2027, None),
    ]
    registry.revoke("M1", "JL-1", "certificate withdrawn by the lab", "cli", 5)
    assert status_on(registry.entries("M1"), date(2026, 6, 1))[0] is S.REVOKED
    assert [r.action for r in registry.log("M1")] == ["add", "revoke", "add", "revoke"]
    with pytest.raises(CalibrationError, match="no standing certificate 'JL-1'"):
        registry.revoke("M1", "JL-1", "again", "cli", 6)
    with pytest.raises(CalibrationError, match="needs a reason"):
        registry.revoke("M1", "JL-2", " ", "cli", 6)


def test_the_registry_is_append_only_in_the_database(registry: Registry):
    registry.add("M1", cert("A", "2026-01-01", "2026-12-31"), "site.toml", 1)
    for statement in ("UPDATE calibration_log SET reason = 'x'", "DELETE FROM calibration_log"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            registry.conn.execute(statement)
    assert len(registry.log()) == 1


def test_site_toml_changes_supersede_but_never_override_an_import(registry: Registry):
    a = cert("A", "2026-01-01", "2026-12-31")
    assert registry.sync_site([("M1", a)], 1) == ["M1: registered A from site.toml"]
    assert registry.sync_site([("M1", a)], 2) == []
    changed = a.model_copy(update={"lab": "another lab"})
    assert registry.sync_site([("M1", changed)], 3) == ["M1: A changed in site.toml, superseded"]
    registry.add("M2", a, "import c.csv sha256:00", 4)
    notes = registry.sync_site([("M2", changed)], 5)
    assert "the registered one stands" in notes[0]
    assert registry.standing("M2", "A").record == a  # type: ignore[union-attr]


def test_certificate_files_name_every_problem(tmp_path: Path):
    csv_text = (
        "meter_id,certificate_no,kind,lab,calibration_date,due_date,result\n"
        "M1,JL-1,verification,Lab,2026-01-01,2026-12-31,pass\n"
        "M9,JL-2,verification,Lab,2026-01-01,2026-12-31,pass\n"
        "M1,JL-3,inspection,Lab,2026-01-01,2025-12-31,maybe\n"
    )
    with pytest.raises(ConfigError) as info:
        read_certificates(tmp_path / "c.csv", csv_text.encode(), ["M1"])
    found = [str(p) for p in info.value.problems]
    assert any(
        p.startswith("row 3: meter_id: no meter 'M9' in the site configuration (M1)") for p in found
    )
    assert any(p.startswith("row 4: kind:") for p in found), found
    assert any(p.startswith("row 4: result:") for p in found), found
    toml_text = b'[[certificates]]\nmeter_id = "M1"\ncertificate_no = "JL-1"\nlab = "Lab"\n'
    toml_text += b"calibration_date = 2026-01-01\ndue_date = 2025-01-01\n"
    with pytest.raises(ConfigError) as info:
        read_certificates(tmp_path / "c.toml", toml_text, ["M1"])
    assert "due_date 2025-01-01 is before calibration_date 2026-01-01" in str(info.value.problems)
    first_row = "".join(csv_text.splitlines(keepends=True)[:2]).encode()
    good = read_certificates(tmp_path / "c.csv", first_row, ["M1"])
    assert [(m, c.certificate_no) for m, c in good] == [("M1", "JL-1")]


def test_trace_follows_reference_standards_and_marks_every_break(registry: Registry):
    from gateway.metrology.status import LinkState, complete, trace
    from gateway.models import Carrier, Meter

    meter = Meter(id="M1", serial="S1", model="m", carrier=Carrier.ELECTRICITY, accuracy_class="1")
    at = datetime(2026, 6, 1, 12, tzinfo=SH)
    own = cert("C-1", "2026-01-01", "2026-12-31").model_copy(
        update={
            "accreditation_no": "CNAS L1",
            "reference_standard": "ref",
            "reference_standard_certificate": "S-1",
        }
    )
    registry.add("M1", own, "t", 1)

    def chain():
        return trace(meter, None, at, registry.entries, registry.find)

    links = chain()
    assert [(x.kind, x.state) for x in links][-2:] == [
        ("reference standard", LinkState.VERIFIED),
        ("certificate", LinkState.MISSING),  # S-1 not registered: the chain ends there
    ]
    assert links[0].state is LinkState.MISSING  # no reading stored
    assert not complete(links)
    national = cert("S-1", "2026-01-01", "2027-12-31").model_copy(
        update={
            "accreditation_no": "NIM",
            "reference_standard": "primary",
            "reference_standard_is_national": True,
        }
    )
    registry.add("std:ref", national, "t", 2)
    assert [x.kind for x in chain()][2:] == [
        "certificate",
        "laboratory",
        "reference standard",
        "certificate",
        "laboratory",
        "national standard",
    ]
    # a standard whose certificate names itself does not loop
    selfish = national.model_copy(
        update={"reference_standard_is_national": False, "reference_standard_certificate": "S-1"}
    )
    registry.supersede("std:ref", "S-1", selfish, "test", "t", 3)
    assert len(chain()) < 20


def test_a_revoked_certificate_stays_revoked_whatever_site_toml_or_a_file_says(registry: Registry):
    a = cert("A", "2026-01-01", "2026-12-31")
    registry.sync_site([("M1", a)], 1)
    registry.revoke("M1", "A", "withdrawn by the lab", "cli", 2)
    assert registry.sync_site([("M1", a)], 3) == []  # site.toml still lists it: not undone
    assert status_on(registry.entries("M1"), date(2026, 6, 1))[0] is S.REVOKED
    with pytest.raises(CalibrationError, match="was revoked"):
        registry.add("M1", a, "import x.csv sha256:00", 4)
    # supersede with a corrected number: the old number is not brought back either
    b = cert("B", "2026-02-01", "2027-01-31")
    registry.add("M2", a, "site.toml", 5)
    registry.supersede("M2", "A", b, "number mistyped", "cli", 6)
    assert registry.sync_site([("M2", a)], 7) == []
    assert status_on(registry.entries("M2"), date(2026, 6, 1))[1].record.certificate_no == "B"  # type: ignore[union-attr]


def test_an_import_is_all_or_nothing(registry: Registry):
    a, b = cert("A", "2026-01-01", "2026-12-31"), cert("B", "2026-01-01", "2026-12-31")
    registry.add("M1", b, "site.toml", 1)
    clash = b.model_copy(update={"lab": "another"})
    with pytest.raises(CalibrationError, match="already registered with other content"):
        registry.add_all([("M1", a), ("M1", clash)], "import f.csv sha256:00", 2)
    assert registry.standing("M1", "A") is None


def test_a_certificate_uncertainty_that_is_not_a_number_falls_back_to_the_class():
    from gateway.metrology.uncertainty import relative_systematic
    from gateway.models import Carrier

    for odd in ("NaN %", "Infinity %", "1E+999999 %", "abc %", "-1 %"):
        c = cert("A", "2026-01-01", "2026-12-31").model_copy(
            update={"expanded_uncertainty": odd, "coverage_factor": 2.0}
        )
        assert relative_systematic(Carrier.ELECTRICITY, "1", c)[1].startswith("class 1"), odd
    with pytest.raises(ValueError, match="finite"):
        CalibrationRecord.model_validate(
            {**cert("A", "2026-01-01", "2026-12-31").model_dump(), "coverage_factor": float("inf")}
        )


def test_csv_that_cannot_be_read_is_a_clear_error(tmp_path: Path):
    huge = "meter_id,certificate_no,errors_found\nM1,A," + "x" * 200_000 + "\n"
    with pytest.raises(ConfigError, match="not readable as CSV"):
        read_certificates(tmp_path / "c.csv", huge.encode(), ["M1"])


def test_trace_follows_the_certificate_the_link_names(registry: Registry):
    from gateway.metrology.status import LinkState, complete, trace
    from gateway.models import Carrier, Meter

    meter = Meter(id="M1", serial="S1", model="m", carrier=Carrier.ELECTRICITY, accuracy_class="1")
    own = cert("C-1", "2026-01-01", "2026-12-31").model_copy(
        update={
            "accreditation_no": "L1",
            "reference_standard": "ref",
            "reference_standard_certificate": "S-1",
        }
    )
    registry.add("M1", own, "t", 1)
    s1 = cert("S-1", "2026-01-01", "2027-12-31").model_copy(
        update={
            "accreditation_no": "NIM",
            "reference_standard": "primary",
            "reference_standard_is_national": True,
        }
    )
    registry.add("std:ref", s1, "t", 2)
    registry.add("std:ref", s1.model_copy(update={"certificate_no": "S-2"}), "t", 3)
    registry.revoke("std:ref", "S-1", "standard out of tolerance", "t", 4)
    links = trace(meter, None, datetime(2026, 6, 1, tzinfo=SH), registry.entries, registry.find)
    standard = links[5]
    assert standard.label.startswith("S-1")
    assert standard.state is LinkState.EXPIRED
    assert not complete(links)


def test_an_s_requirement_needs_an_s_class():
    from gateway.metrology.status import class_meets

    assert class_meets("electricity", "0.5S", "0.5S") is True
    assert class_meets("electricity", "0.2S", "0.5S") is True
    assert class_meets("electricity", "0.5", "0.5S") is False  # same limit, no low-current spec
    assert class_meets("electricity", "0.5S", "1") is True
    assert class_meets("electricity", "2", "1") is False
    assert class_meets("electricity", "1", "B") is None


def test_a_good_label_reading_is_a_verified_link(registry: Registry):
    from gateway.metrology.status import LinkState, trace
    from gateway.models import Carrier, Meter, Quality
    from tests.unit.test_store import LABEL

    meter = Meter(id="P1", serial="S1", model="m", carrier=Carrier.PRODUCTION, accuracy_class="1")
    code = LABEL.model_copy(update={"text": "pack-z"})
    at = datetime(2026, 6, 1, 12, tzinfo=SH)
    (link, *_) = trace(meter, code, at, registry.entries, registry.find)
    assert (link.state, link.label) == (LinkState.VERIFIED, "product_code = 'pack-z' (good)")
    bad = code.model_copy(update={"text": None, "quality": Quality.bad("timeout")})
    assert trace(meter, bad, at, registry.entries, registry.find)[0].state is LinkState.EXPIRED


def test_trace_opens_with_a_counter_else_a_number_else_the_first_point():
    from gateway.metrology.status import traced_point
    from gateway.models import PointKind, PointSpec, Quantity

    power = PointSpec(name="p", quantity=Quantity.ACTIVE_POWER, kind=PointKind.GAUGE, unit="kW")
    energy = PointSpec(
        name="e", quantity=Quantity.ACTIVE_ENERGY_IMPORT, kind=PointKind.COUNTER, unit="kWh"
    )
    code = PointSpec(name="c", quantity=Quantity.PRODUCT_CODE, kind=PointKind.LABEL, unit="")
    assert traced_point([code, power, energy]) == "e"  # what records are made of
    assert traced_point([code, power]) == "p"
    assert traced_point([code]) == "c"
