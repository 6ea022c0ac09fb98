"""Document fields kept from the corpus (`lsr index --keep-fields year,source`) and the
`--where` predicates over them (`year>=2020 and source="pubmed"`).

Fields are stored columnar, one JSON list per field (`fields/NAME.json`, a value per
document row, null where a document lacks it). A name with dots looks into nested objects
(`metadata.year`). Predicates are parsed here, never evaluated as Python:

    expr  := conj ("or" conj)*          conj := atom ("and" atom)*
    atom  := "(" expr ")" | FIELD OP VALUE
    OP    := = | == | != | < | <= | > | >=
    VALUE := a number | a quoted string ('...' or "...") | a bare word (a string)

A comparison with a number looks at the field's numbers, one with a string at its strings;
a document whose value is missing or of the other type does not match.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lsr.errors import LsrError

FIELDS_DIR = "fields"
OPS: dict[str, Callable] = {
    "=": operator.eq, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
_TOKEN = re.compile(
    r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))|(?P<str>\"[^\"]*\"|'[^']*')"
    r"|(?P<op><=|>=|!=|==|=|<|>)|(?P<paren>[()])|(?P<word>[A-Za-z_][\w.\-]*))"
)
NAME = re.compile(r"[A-Za-z_][\w.\-]*\Z")


class WhereError(LsrError):
    """A `--where` expression that does not parse, or names a field that was not kept."""


def field_value(record: Mapping[str, Any], name: str) -> Any:
    """The value of field `name` in a corpus record (dots: nested objects); None if absent."""
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, (str, int, float)) else None


def parse_field_names(text: str) -> list[str]:
    """`year,source` → ["year", "source"]; a malformed name is a `LsrError`."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not NAME.match(n)]
    if bad:
        raise LsrError(f"--keep-fields: {bad[0]!r} is not a field name (letters, digits, _ . -)")
    return list(dict.fromkeys(names))


class FieldsWriter:
    """Collects the kept fields of each document added, in row order; `save` writes them."""

    def __init__(self, names: Sequence[str], columns: Mapping[str, list] | None = None) -> None:
        self.names = list(names)
        self.columns = {n: list((columns or {}).get(n, [])) for n in self.names}

    def add(self, record: Mapping[str, Any]) -> None:
        for name in self.names:
            self.columns[name].append(field_value(record, name))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, values in self.columns.items():
            (directory / f"{name}.json").write_text(json.dumps(values, ensure_ascii=False))


@dataclass
class Column:
    """One field as arrays: its numbers (NaN elsewhere) and its strings (None elsewhere)."""

    numbers: np.ndarray
    strings: np.ndarray

    @classmethod
    def of(cls, values: list) -> "Column":
        numbers = np.array([v if isinstance(v, (int, float)) else np.nan for v in values], np.float64)
        strings = np.array([v if isinstance(v, str) else None for v in values], object)
        return cls(numbers, strings)


def read_raw_columns(directory: Path, names: Sequence[str], n_rows: int) -> dict[str, list]:
    """The kept fields' JSON lists under `directory`, checked: one value per row."""
    columns = {}
    for name in names:
        file = directory / f"{name}.json"
        try:
            values = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            raise LsrError(f"{file}: unreadable field column ({err}) (index is damaged; rebuild it)") from None
        if not isinstance(values, list) or len(values) != n_rows:
            raise LsrError(f"{file}: not a list of {n_rows} values (index is damaged; rebuild it)")
        columns[name] = values
    return columns


def read_columns(directory: Path, names: Sequence[str], n_rows: int) -> dict[str, Column]:
    """The kept fields under `directory` as arrays (checked as `read_raw_columns`)."""
    return {name: Column.of(values) for name, values in read_raw_columns(directory, names, n_rows).items()}


# ---- predicates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: float | str

    def mask(self, columns: Mapping[str, Column], expression: str) -> np.ndarray:
        if self.field not in columns:
            kept = ", ".join(sorted(columns)) or "none; index with --keep-fields"
            raise WhereError(f"--where {expression!r}: unknown field {self.field!r} (kept fields: {kept})")
        column = columns[self.field]
        compare = OPS[self.op]
        if isinstance(self.value, float):
            present = ~np.isnan(column.numbers)
            what, values = "numbers", column.numbers
        else:
            present = np.array([v is not None for v in column.strings], np.bool_)
            what, values = "strings", column.strings
        if len(present) and not present.any():
            other = "a quoted string" if what == "numbers" else "a number"
            raise WhereError(f"--where {expression!r}: field {self.field!r} holds no {what}; compare it with {other}")
        out = np.zeros(len(present), np.bool_)
        if isinstance(self.value, float):
            out[present] = compare(values[present], self.value)
        else:
            out[present] = compare(values[present].astype(str), self.value)
        return out


@dataclass(frozen=True)
class Combine:
    op: str  # "and" | "or"
    parts: tuple

    def mask(self, columns: Mapping[str, Column], expression: str) -> np.ndarray:
        masks = [p.mask(columns, expression) for p in self.parts]
        return np.logical_and.reduce(masks) if self.op == "and" else np.logical_or.reduce(masks)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, column) tokens; anything unrecognised is a `WhereError` naming its column."""
    tokens, pos = [], 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            start = len(text) - len(text[pos:].lstrip())
            raise WhereError(f"--where {text!r}: unexpected {text[start]!r} at column {start + 1}")
        kind = match.lastgroup
        value, column = match.group(kind), match.start(kind) + 1
        if kind == "word" and value.lower() in ("and", "or"):
            kind, value = "bool", value.lower()
        tokens.append((kind, value, column))
        pos = match.end()
    return tokens


def parse_where(text: str) -> Compare | Combine:
    """The predicate `text` as a tree; a syntax error is one `WhereError` line saying what was
    expected where."""
    tokens = _tokens(text)
    pos = 0

    def fail(expected: str) -> WhereError:
        if pos < len(tokens):
            kind, value, column = tokens[pos]
            return WhereError(f"--where {text!r}: expected {expected} at column {column}, found {value!r}")
        return WhereError(f"--where {text!r}: expected {expected} at the end")

    def peek(kind: str, value: str | None = None) -> bool:
        return pos < len(tokens) and tokens[pos][0] == kind and (value is None or tokens[pos][1] == value)

    def chain(op: str, item: Callable) -> Compare | Combine:
        nonlocal pos
        parts = [item()]
        while peek("bool", op):
            pos += 1
            parts.append(item())
        return parts[0] if len(parts) == 1 else Combine(op, tuple(parts))

    def atom() -> Compare | Combine:
        nonlocal pos
        if peek("paren", "("):
            pos += 1
            inner = chain("or", conj)
            if not peek("paren", ")"):
                raise fail("')'")
            pos += 1
            return inner
        if not peek("word"):
            raise fail("a field name")
        field = tokens[pos][1]
        pos += 1
        if not peek("op"):
            raise fail("a comparison (= != < <= > >=)")
        op = tokens[pos][1]
        pos += 1
        if peek("num"):
            value: float | str = float(tokens[pos][1])
        elif peek("str"):
            value = tokens[pos][1][1:-1]
        elif peek("word"):
            value = tokens[pos][1]
        else:
            raise fail(f"a number or a string after {op!r}")
        pos += 1
        return Compare(field, op, value)

    def conj() -> Compare | Combine:
        return chain("and", atom)

    if not tokens:
        raise WhereError("--where: empty expression")
    tree = chain("or", conj)
    if pos < len(tokens):
        raise fail("'and', 'or' or the end")
    return tree


def where_mask(text: str, columns: Mapping[str, Column]) -> np.ndarray:
    """The rows whose fields satisfy the predicate `text` (a boolean mask)."""
    return parse_where(text).mask(columns, text)
