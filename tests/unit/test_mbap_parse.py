"""Read responses are taken apart exactly as Modbus Application Protocol v1.1b3 6.1-6.4 says."""

from __future__ import annotations

import pytest

from collectors.modbus.link import Failure, RequestFailed, parse_read_response


def test_registers_are_big_endian_words():
    assert parse_read_response(3, 2, bytes([3, 4, 0x12, 0x34, 0xAB, 0xCD])) == bytes.fromhex(
        "1234abcd"
    )


def test_bits_are_least_significant_first_and_padding_ignored():
    # 10 coils: byte 1 = 0b1100_1101 -> coils 0..7 = 1,0,1,1,0,0,1,1; byte 2 = 0b01 -> coil 8 = 1
    assert list(parse_read_response(1, 10, bytes([1, 2, 0xCD, 0x01]))) == [
        1,
        0,
        1,
        1,
        0,
        0,
        1,
        1,
        1,
        0,
    ]


@pytest.mark.parametrize(
    ("pdu", "kind", "reason"),
    [
        (bytes([0x83, 0x02]), Failure.EXCEPTION, "modbus-exception-illegal-address"),
        (bytes([0x83, 0x0B]), Failure.EXCEPTION, "modbus-exception-gateway-target-no-response"),
        (bytes([0x83, 0x63]), Failure.EXCEPTION, "modbus-exception-code-99"),
        (bytes([4, 2, 0, 1]), Failure.RESPONSE, "wrong-function-in-response"),
        (bytes([3, 2, 0, 1]), Failure.RESPONSE, "short-response"),  # asked for 2 registers
        (bytes([3, 4, 0, 1, 0]), Failure.RESPONSE, "short-response"),  # byte count lies
        (b"", Failure.RESPONSE, "wrong-function-in-response"),
    ],
)
def test_bad_responses_become_reasons(pdu, kind, reason):
    with pytest.raises(RequestFailed) as info:
        parse_read_response(3, 2, pdu)
    assert (info.value.kind, info.value.reason) == (kind, reason)
