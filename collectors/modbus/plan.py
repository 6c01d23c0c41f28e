"""Read planning: the fewest Modbus requests that cover a device's points.

Points are grouped per function code, sorted by address, and joined into one request while
the request stays within the device's maximum size and the unused registers between two
points do not exceed `max_gap`. Each response is split back into points by offset, exactly.
Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from collectors.modbus.config import ModbusDevice
from collectors.modbus.points import BIT_FUNCTIONS, ModbusPoint


@dataclass(frozen=True)
class Request:
    """One read request and the points its response is split into."""

    function_code: int
    address: int
    count: int  # registers, or bits for function codes 1 and 2
    points: tuple[int, ...]  # indexes into the device's points

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.address + self.count

    def describe(self) -> str:
        unit = "bits" if self.function_code in BIT_FUNCTIONS else "registers"
        last = self.end - 1
        return (
            f"FC{self.function_code} {self.address}..{last} ({self.count} {unit},"
            f" {len(self.points)} point{'s' if len(self.points) != 1 else ''})"
        )


def plan(
    points: Sequence[ModbusPoint],
    *,
    max_registers: int,
    max_bits: int,
    max_gap: int,
    only: Iterable[int] | None = None,
    cuts: Iterable[int] = (),
) -> list[Request]:
    """Requests covering `points` (or the indexes in `only`), ordered by function code and
    address. A point in `cuts` always starts a new request (used after a joined request was
    refused, so an unmapped register between points cannot take them all down)."""
    chosen = sorted(
        range(len(points)) if only is None else set(only),
        key=lambda i: (points[i].function_code, points[i].address, i),
    )
    cut = set(cuts)
    requests: list[Request] = []
    open_fc, start, end, members = -1, 0, 0, list[int]()

    def close() -> None:
        if members:
            requests.append(Request(open_fc, start, end - start, tuple(members)))

    for i in chosen:
        p = points[i]
        p_end = p.address + p.count
        limit = max_bits if p.function_code in BIT_FUNCTIONS else max_registers
        joinable = (
            members
            and p.function_code == open_fc
            and i not in cut
            and p.address - end <= max_gap
            and max(end, p_end) - start <= limit
        )
        if joinable:
            end = max(end, p_end)
            members.append(i)
        else:
            close()
            open_fc, start, end, members = p.function_code, p.address, p_end, [i]
    close()
    return requests


def plan_device(
    device: ModbusDevice, *, only: Iterable[int] | None = None, cuts: Iterable[int] = ()
) -> list[Request]:
    """`plan` within the device's own request limits."""
    return plan(
        device.points,
        max_registers=device.max_registers_per_request,
        max_bits=device.max_bits_per_request,
        max_gap=device.max_gap,
        only=only,
        cuts=cuts,
    )


def split_point(request: Request, points: Sequence[ModbusPoint]) -> int:
    """Where to cut a refused request in two: before the point after its widest gap (unmapped
    registers are the usual reason for a refusal), else in the middle."""
    members = sorted(request.points, key=lambda i: (points[i].address, i))
    best, best_gap = members[len(members) // 2], 0
    end = points[members[0]].address + points[members[0]].count
    for i in members[1:]:
        gap = points[i].address - end
        if gap > best_gap:
            best, best_gap = i, gap
        end = max(end, points[i].address + points[i].count)
    return best
