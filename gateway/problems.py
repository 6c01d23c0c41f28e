"""Problems in a user's input (a site configuration, a certificate file), each named by the
path of the field as the user wrote it, and the error that carries them all: one message that
says every problem and where, never a traceback."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.errors import TanjiError
from gateway.models import shown, wrong_type


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(TanjiError):
    """The configuration is invalid; `problems` lists every one with its field path."""

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(str(p) for p in problems))


def _path(loc: tuple[int | str, ...], tags: Collection[str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in tags or part.startswith("function-"):
            continue  # the union tag pydantic inserts, not a field the user wrote
        else:
            out += f".{part}" if out else part
    return out


def _lower_first(msg: str) -> str:
    return msg[:1].lower() + msg[1:]


def _message(err: ErrorDetails, tags: Collection[str]) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field (check the spelling)"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{_lower_first(err['msg'])} (got {shown(err['input'])})"
    if kind == "finite_number":
        return f"must be a finite number (got {shown(err['input'])})"
    if kind in ("float_type", "float_parsing", "decimal_type", "decimal_parsing"):
        return wrong_type(err["input"], "a number")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return wrong_type(err["input"], "a whole number")
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, without quotes (got {shown(err['input'])})"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        allowed = ", ".join(sorted(tags))
        return f"must be one of: {allowed} (got {ctx.get('tag', 'nothing')!r})"
    if kind in ("literal_error", "enum"):
        return f"{_lower_first(err['msg'])} (got {err['input']!r})"
    msg = str(ctx.get("error") or err["msg"])
    return msg.removeprefix("Value error, ")


def problems_from(exc: ValidationError, tags: Collection[str] = ()) -> list[ConfigProblem]:
    """Every problem pydantic found, with the path of the field as the user wrote it
    (`tags`: the names of a tagged union's members, which are not part of that path)."""
    errors = exc.errors(include_url=False)
    # pydantic checks a list's length after dropping invalid items: such a "too short" error
    # is only an echo of the errors inside the list, so it is left out
    inner = [e["loc"] for e in errors]
    errors = [
        e
        for e in errors
        if not (
            e["type"] == "too_short"
            and any(loc[: len(e["loc"])] == e["loc"] and len(loc) > len(e["loc"]) for loc in inner)
        )
    ]
    problems = []
    for err in errors:
        loc = err["loc"]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "protocol")
        problems.append(ConfigProblem(_path(loc, tags), _message(err, tags)))
    return problems
