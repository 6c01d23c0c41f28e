"""Evidence primitives: canonical JSON (RFC 8785), SHA-256 leaves and Merkle roots.

Pure functions. Anything hashed here must be re-computable offline by a verifier from the
exported data alone, so inputs are always the models' JSON form, never Python objects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import rfc8785
from pydantic import BaseModel

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def canonical_json(obj: BaseModel | Any, without_numbers: bool = False) -> bytes:
    """RFC 8785 bytes of a model's JSON form (or of plain JSON data). `without_numbers`: the
    caller guarantees the JSON form has no numbers (e.g. a Reading: its timestamps and values
    are strings), which spares checking it."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    plain = data if without_numbers else _plain(data)
    if plain is not _NOT_PLAIN:
        # RFC 8785 of ASCII text whose numbers print alike in ECMAScript and Python is
        # exactly sorted keys, no whitespace and JSON's string escapes, which the C encoder
        # of `json` writes ten times faster than rfc8785 (Merkle roots over readings are most
        # of what sealing a period costs, batch ids most of what a platform spends per
        # record); tests/unit/test_evidence.py checks byte equality with rfc8785
        text = _COMPACT.encode(plain)
        if text.isascii():
            return text.encode("ascii")
    return bytes(rfc8785.dumps(data))


_COMPACT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_SAFE_INT = 2**53 - 1  # ECMAScript prints integers up to here as their digits, like Python
_NOT_PLAIN = object()


def _plain(data: Any) -> Any:
    """`data` with integral floats as ints, when every number in it prints the same in
    ECMAScript (RFC 8785) and Python: integers up to 2^53 - 1, integral floats up to 2^53
    (as ints: ECMAScript drops the ".0"), other floats in [1e-4, 1e16) (both print the
    shortest round-trip digits without an exponent). Otherwise _NOT_PLAIN."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            item = _plain(value)
            if item is _NOT_PLAIN or not isinstance(key, str):
                return _NOT_PLAIN
            out[key] = item
        return out
    if isinstance(data, list):
        items = [_plain(v) for v in data]
        return _NOT_PLAIN if any(i is _NOT_PLAIN for i in items) else items
    if data is None or isinstance(data, str | bool):
        return data
    if isinstance(data, int):
        return data if abs(data) <= _SAFE_INT else _NOT_PLAIN
    if isinstance(data, float):
        if data.is_integer():  # exact digits up to 2^53; beyond, ECMAScript pads with zeros
            return int(data) if abs(data) <= 2**53 else _NOT_PLAIN
        return data if 1e-4 <= abs(data) < 1e16 else _NOT_PLAIN
    return _NOT_PLAIN


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leaf_hash(obj: BaseModel | Any, without_numbers: bool = False) -> bytes:
    # domain-separated (0x00 leaf / 0x01 node, as RFC 6962) so a node can't pose as a leaf
    return hashlib.sha256(b"\x00" + canonical_json(obj, without_numbers)).digest()


def merkle_root(leaves: Sequence[bytes]) -> str:
    """RFC 6962-style Merkle root over leaf hashes, in the given order (hex)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])  # an odd node is promoted unchanged
        level = nxt
    return level[0].hex()


def root_of(items: Iterable[BaseModel | Any], without_numbers: bool = False) -> str:
    return merkle_root([leaf_hash(i, without_numbers) for i in items])


def content_id(obj: BaseModel | Any, prefix: str = "") -> str:
    """A content-derived identifier: the SHA-256 of the canonical JSON, hex."""
    return prefix + sha256_hex(canonical_json(obj))
