"""Unified social credit code (统一社会信用代码) check per GB 32100-2015.

18 characters from a 31-symbol alphabet (digits and capitals without I, O, Z, S, V); the
18th is a check character: weights W_i = 3^(i-1) mod 31 for positions 1..17,
C18 = 31 - (sum(C_i * W_i) mod 31), where 31 maps to 0.
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # 1, 3, 9, 27, 19, 26, 16, ...


def check_character(first17: str) -> str:
    total = sum(ALPHABET.index(c) * w for c, w in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def uscc_problem(code: str) -> str | None:
    """Why `code` is not a valid USCC, or None when it is."""
    if len(code) != 18:
        return f"must be 18 characters, got {len(code)}"
    bad = sorted({c for c in code if c not in ALPHABET})
    if bad:
        return f"contains {', '.join(repr(c) for c in bad)}; allowed are 0-9 and {ALPHABET[10:]}"
    if not code[2:8].isdigit():
        return "characters 3-8 (administrative division code) must be digits"
    expected = check_character(code[:17])
    if code[17] != expected:
        return f"check character is {code[17]!r}, GB 32100 requires {expected!r}"
    return None
