"""Evidence primitives: canonical JSON (RFC 8785), SHA-256 leaves and Merkle roots.

Pure functions. Anything hashed here must be re-computable offline by a verifier from the
exported data alone, so inputs are always the models' JSON form, never Python objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import rfc8785
from pydantic import BaseModel

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def canonical_json(obj: BaseModel | Any) -> bytes:
    """RFC 8785 bytes of a model's JSON form (or of plain JSON data)."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    return bytes(rfc8785.dumps(data))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leaf_hash(obj: BaseModel | Any) -> bytes:
    # domain-separated (0x00 leaf / 0x01 node, as RFC 6962) so a node can't pose as a leaf
    return hashlib.sha256(b"\x00" + canonical_json(obj)).digest()


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


def root_of(items: Iterable[BaseModel | Any]) -> str:
    return merkle_root([leaf_hash(i) for i in items])


def content_id(obj: BaseModel | Any, prefix: str = "") -> str:
    """A content-derived identifier: the SHA-256 of the canonical JSON, hex."""
    return prefix + sha256_hex(canonical_json(obj))
