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
    if without_numbers or _without_numbers(data):
        # without numbers, RFC 8785 of ASCII text is exactly sorted keys, no whitespace and
        # JSON's string escapes, which the C encoder of `json` writes ten times faster than
        # rfc8785 (Merkle roots over readings are most of what sealing a period costs);
        # tests/unit/test_evidence.py checks byte equality with rfc8785
        text = _COMPACT.encode(data)
        if text.isascii():
            return text.encode("ascii")
    return bytes(rfc8785.dumps(data))


_COMPACT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _without_numbers(data: Any) -> bool:
    """Only objects with string keys, arrays, strings, true/false/null: no numbers (their
    RFC 8785 form is ECMAScript's, not Python's)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif not (item is None or item is True or item is False or isinstance(item, str)):
            return False
    return True


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
