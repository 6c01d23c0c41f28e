"""The OPC UA collector against an independent server (node-opcua, from the npm registry;
`make test` installs it in bench/opcua_interop when npm is there): every point read by
namespace URI, by subscription and by polling, the counters never running backwards."""

from __future__ import annotations

import pytest

from bench import opcua_interop


def test_collector_reads_a_node_opcua_server():
    missing = opcua_interop.available()
    if missing:
        pytest.skip(missing)
    result = opcua_interop.run(seconds=4.0)
    assert result["ok"], result
    assert result["points"]["energy"]["good"] >= 4
    assert result["points"]["units"]["never_backwards"]
    assert result["points"]["power"]["last"] == "36"
    assert result["points"]["product"]["last"] == "电池包-48V"  # a String, UTF-8 both ways
    assert result["points"]["order"]["last"] == "WO-2026-0042"  # a LocalizedText's text
    assert result["points"]["order"]["server_timestamps"]
