"""Read planner: fewest requests within the limits, each point recovered exactly."""

from __future__ import annotations

import itertools
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from collectors.modbus import ModbusPoint
from collectors.modbus.decode import decode, encode
from collectors.modbus.plan import Request, plan, split_point


def point(address: int, data_type: str = "uint32", fc: int = 3, **kw) -> ModbusPoint:
    return ModbusPoint(
        name=kw.pop("name", f"p{address}-{fc}"),
        quantity="status" if data_type == "bool" else "active_power",
        kind="gauge",
        unit="1" if data_type == "bool" else "kW",
        address=address,
        function_code=fc,
        data_type=data_type,
        **kw,
    )


def test_adjacent_points_share_a_request_and_gaps_split():
    points = [point(0), point(2, "float32"), point(4, "int16"), point(20), point(30)]
    requests = plan(points, max_registers=125, max_bits=2000, max_gap=8)
    assert [(r.address, r.count, r.points) for r in requests] == [
        (0, 5, (0, 1, 2)),
        (20, 12, (3, 4)),
    ]
    assert [r.describe() for r in requests] == [
        "FC3 0..4 (5 registers, 3 points)",
        "FC3 20..31 (12 registers, 2 points)",
    ]


def test_function_codes_never_mix_and_bits_have_their_own_limit():
    points = [point(0), point(0, fc=4), point(5, "bool", fc=1), point(1990, "bool", fc=1)]
    requests = plan(points, max_registers=125, max_bits=2000, max_gap=2000)
    assert [(r.function_code, r.address, r.count) for r in requests] == [
        (1, 5, 1986),
        (3, 0, 2),
        (4, 0, 2),
    ]
    assert len(plan(points, max_registers=125, max_bits=100, max_gap=2000)) == 4


def test_request_size_limit_is_respected():
    points = [point(a) for a in range(0, 200, 2)]
    requests = plan(points, max_registers=40, max_bits=2000, max_gap=0)
    assert [r.count for r in requests] == [40, 40, 40, 40, 40]


def test_bit_fields_of_one_status_register_share_it():
    points = [
        point(8, "uint16", name="alarm", bit=0),
        point(8, "uint16", name="mode", bit=4, bit_count=3),
        point(9, "uint16"),
    ]
    assert [
        (r.address, r.count, r.points)
        for r in plan(points, max_registers=125, max_bits=2000, max_gap=0)
    ] == [(8, 2, (0, 1, 2))]


def test_cuts_start_new_requests_and_refused_requests_split_at_their_widest_gap():
    points = [point(0), point(2), point(4)]
    requests = plan(points, max_registers=125, max_bits=2000, max_gap=8, cuts={1})
    assert [r.points for r in requests] == [(0,), (1, 2)]
    holes = [point(0), point(2), point(7), point(9)]
    (joined,) = plan(holes, max_registers=125, max_bits=2000, max_gap=8)
    assert split_point(joined, holes) == 2  # the 3-register hole at 4..6
    (no_gap,) = plan(points, max_registers=125, max_bits=2000, max_gap=8)
    assert split_point(no_gap, points) == 1
    requests = plan(points, max_registers=125, max_bits=2000, max_gap=8, only={0, 2})
    assert [r.points for r in requests] == [(0, 2)]


def optimum(spans: list[tuple[int, int]], max_registers: int, max_gap: int) -> int:
    """Fewest requests by dynamic programming over runs of address-sorted, disjoint spans."""
    best = [0] + [10**9] * len(spans)
    for j in range(1, len(spans) + 1):
        for i in range(j):
            run = spans[i:j]
            ok = run[-1][1] - run[0][0] <= max_registers and all(
                b[0] - a[1] <= max_gap for a, b in itertools.pairwise(run)
            )
            if ok:
                best[j] = min(best[j], best[i] + 1)
    return best[-1]


TYPES = ["uint16", "int16", "uint32", "float32", "uint64", "float64"]


@given(
    layout=st.lists(st.tuples(st.integers(0, 12), st.sampled_from(TYPES)), min_size=1, max_size=25),
    max_registers=st.integers(4, 125),
    max_gap=st.integers(0, 20),
)
def test_plan_covers_every_point_within_limits_with_fewest_requests(layout, max_registers, max_gap):
    points, address = [], 0
    for gap, data_type in layout:
        address += gap
        points.append(point(address, data_type))
        address += points[-1].count
    requests = plan(points, max_registers=max_registers, max_bits=2000, max_gap=max_gap)
    covered = sorted(i for r in requests for i in r.points)
    assert covered == list(range(len(points)))
    for r in requests:
        assert r.count <= max_registers
        assert all(
            r.address <= points[i].address and points[i].address + points[i].count <= r.end
            for i in r.points
        )
    spans = [(p.address, p.address + p.count) for p in points]
    assert len(requests) == optimum(spans, max_registers, max_gap)


@given(values=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20), gap=st.integers(0, 3))
def test_response_splits_back_into_exact_points(values, gap):
    points = [point(i * (2 + gap)) for i in range(len(values))]
    words = [0xDEAD] * (len(values) * (2 + gap))
    for p, v in zip(points, values, strict=True):
        words[p.address : p.address + 2] = encode(v, "uint32", "ABCD")
    (request,) = plan(points, max_registers=125, max_bits=2000, max_gap=gap)
    assert isinstance(request, Request)
    got = [
        decode(words[points[i].address - request.address :][:2], "uint32", "ABCD", Decimal(1))
        for i in request.points
    ]
    assert got == values
