"""Prometheus text exposition -> one long DataFrame.

This parser is written by hand for two reasons:

- **Names.** prometheus_client's parser renames counter samples: a counter
  family ``PostgresServer_CPUSeconds_Total`` comes back as samples named
  ``PostgresServer_CPUSeconds_Total_total``. The API's names must survive
  exactly, so that they match the data sheet and the docs' PromQL.
- **Speed.** prometheus_client builds a Python object per sample; an org payload
  (100 services × ~32 series) then costs more to parse than to fetch. Here the
  regular expressions run over the whole text at once, labels are parsed once
  per distinct label set, and the columns are built from codes. The benchmark
  (``tests/benchmarks/bench_metrics.py``) measures the ratio.

Validation is complete all the same: every line must be a sample, a comment or
blank, and the first line that is not raises
:class:`~pgcloud_nb.errors.PrometheusParseError` quoting it with its line number
and the reason (bad label escape, missing value, bad number, duplicate HELP or
TYPE, TYPE after samples, a timestamp past what a µs timestamp holds…).

The frame: ``timestamp, service_id, service_name, metric, <label columns>,
value``. The three labels every series carries (data sheet) become
``service_id``/``service_name`` and ``attrs["org_id"]``; every other label gets
its own categorical column. ``attrs["types"]`` maps each metric to its TYPE.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import datetime
from typing import NoReturn

import numpy as np
import pandas as pd

from .columns import TS_DTYPE
from .errors import PrometheusParseError

__all__ = [
    "LABEL_ORDER",
    "TS_DTYPE",
    "label_columns",
    "parse_prometheus",
]

ORG_LABEL, SERVICE_LABEL, NAME_LABEL = "clickhouse_org", "postgres_service", "postgres_service_name"
LABEL_ORDER = ("mode", "state", "database", "postgres_status", "postgres_version")
_COMMON_LABELS = frozenset({ORG_LABEL, SERVICE_LABEL, NAME_LABEL})
_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
_MAX_MS = int(np.iinfo(np.int64).max) // 1000  # the farthest own timestamp a µs column holds

# Possessive quantifiers (*+, ++): nothing here needs backtracking, and it is ~10% faster.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*+"
_LNAME = r"[a-zA-Z_][a-zA-Z0-9_]*+"
_LVALUE = r'"[^"\\\n]*+(?:\\[\\"n][^"\\\n]*+)*+"'  # the format allows exactly \\, \" and \n
_PAIR = rf"{_LNAME}[ \t]*+=[ \t]*+{_LVALUE}"
_LABELS = rf"[ \t]*+(?:{_PAIR}[ \t]*+(?:,[ \t]*+{_PAIR}[ \t]*+)*+,?[ \t]*+)?"
_VALUE = r"[-+]?(?:(?:[0-9]++\.?[0-9]*+|\.[0-9]++)(?:[eE][-+]?[0-9]++)?|Inf)|NaN"
# The three labels every series starts with (data sheet) are captured apart from the
# rest: there are only ~100 distinct prefixes and ~20 distinct rests in an org payload,
# so labels are parsed per distinct string, not per line.
_COMMON = rf"clickhouse_org={_LVALUE},postgres_service={_LVALUE},postgres_service_name={_LVALUE}"
_SAMPLE = (
    rf"({_NAME})(?:[ \t]*+\{{(?:({_COMMON})(?:,|(?=\}})))?({_LABELS})\}})?"
    rf"[ \t]++({_VALUE})(?:[ \t]++(-?[0-9]++))?[ \t]*+"
)
# one pass over the text: every valid line is a sample, a comment or blank
_LINE = re.compile(rf"^(?:{_SAMPLE}|(#[^\n]*+)|[ \t]*+)$", re.M)
_SAMPLE_LINE = re.compile(_SAMPLE)
_META = re.compile(rf"#[ \t]+(HELP|TYPE)(?:[ \t]+({_NAME})(?:[ \t]+(.*?))?)?[ \t]*")
_META_PREFIX = re.compile(r"#[ \t]+(HELP|TYPE)(?:[ \t]|$)")
_PAIRS = re.compile(rf"({_LNAME})[ \t]*=[ \t]*\"([^\"\\\n]*(?:\\[\\\"n][^\"\\\n]*)*)\"")
_UNESCAPE = re.compile(r"\\([\\\"n])")


def parse_prometheus(
    text: str, *, timestamp: datetime | pd.Timestamp | None = None
) -> pd.DataFrame:
    """Parse a Postgres Prometheus payload (per-service or org-wide) into a long frame.

    ``timestamp`` stamps samples that carry none (the API sends none); it
    defaults to now, in UTC. Samples with their own timestamp (ms) keep it.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    rows = _LINE.findall(text)
    if len(rows) != text.count("\n") + 1:  # a bad line matches no alternative
        _raise_first_bad_line(text)
    names, common, rest, values, stamps, comment = zip(*rows, strict=True) if rows else ((),) * 6
    # factorize over every line (non-samples have name ""), then keep the sample lines
    codes, metrics = _codes(names)
    blank = metrics.index("") if "" in metrics else -1
    line_of = np.flatnonzero(codes != blank)  # line index of each sample
    codes = codes[line_of]
    if blank >= 0:
        del metrics[blank]
        codes[codes > blank] -= 1
    _, first = np.unique(codes, return_index=True)
    first_line = dict(zip(metrics, line_of[first].tolist(), strict=True))
    types, helps = _metadata(np.array(comment, dtype=object), first_line)
    try:
        c_codes, c_uniq = _codes(common)
        r_codes, r_uniq = _codes(rest)
        return _build(
            (codes, metrics),
            (c_codes[line_of], c_uniq),
            (r_codes[line_of], r_uniq),
            np.array(values, dtype=object)[line_of].astype(np.float64),
            np.array(stamps, dtype=object)[line_of] if any(stamps) else None,
            (types, helps),
            _stamp(timestamp),
        )
    except _BadSample as exc:
        lineno = int(line_of[exc.index])
        raise PrometheusParseError(lineno + 1, text.split("\n")[lineno], exc.reason) from None


def label_columns(names: Iterable[str]) -> list[str]:
    """Extra label names in a stable order: the data sheet's, then the rest sorted."""
    names = set(names)
    return [n for n in LABEL_ORDER if n in names] + sorted(names.difference(LABEL_ORDER))


def _stamp(ts: datetime | pd.Timestamp | None) -> pd.Timestamp:
    stamp = pd.Timestamp.now(tz="UTC") if ts is None else pd.Timestamp(ts)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.as_unit("us")


def _metadata(
    comment: np.ndarray, first_line: dict[str, int]
) -> tuple[dict[str, str], dict[str, str]]:
    """HELP and TYPE per family; duplicates and a TYPE after samples are errors."""
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    for i in np.flatnonzero(comment != ""):
        line = comment[i]
        if not _META_PREFIX.match(line):
            continue  # a plain comment
        meta = _META.fullmatch(line)
        fail = functools.partial(PrometheusParseError, int(i) + 1, line)
        if meta is None or meta[2] is None:
            raise fail("HELP/TYPE without a metric name")
        kind, name, doc = meta[1], meta[2], meta[3] or ""
        if kind == "HELP":
            if name in helps:
                raise fail(f"duplicate HELP for {name}")
            helps[name] = _unescape(doc)
            continue
        if name in types:
            raise fail(f"duplicate TYPE for {name}")
        if doc not in _TYPES:
            raise fail(f"unknown metric type {doc!r}")
        if first_line.get(name, i) < i:
            raise fail(f"TYPE for {name} after its samples")
        types[name] = doc
    return types, helps


def _codes(seq: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Codes in first-seen order; a dict beats pd.factorize on object arrays of str here."""
    seen: dict[str, int] = {}
    codes = np.array([seen.setdefault(x, len(seen)) for x in seq], dtype=np.intp)
    return codes, list(seen)


def _build(
    metric_codes: tuple[np.ndarray, list[str]],
    common_codes: tuple[np.ndarray, list[str]],
    rest_codes: tuple[np.ndarray, list[str]],
    values: np.ndarray,
    stamps: np.ndarray | None,
    meta: tuple[dict[str, str], dict[str, str]],
    stamp: pd.Timestamp,
) -> pd.DataFrame:
    codes, metrics = metric_codes
    (c_codes, c_uniq), (r_codes, r_uniq) = common_codes, rest_codes
    types, helps = meta
    # labels are parsed once per distinct string, then spread by code
    c_parsed = _parse_all(c_uniq, c_codes)
    r_parsed = _parse_all(r_uniq, r_codes)
    # a label both in the captured prefix and in the rest is a duplicate
    in_rest = np.array([not _COMMON_LABELS.isdisjoint(p) for p in r_parsed] + [False])
    in_common = np.array([bool(p) for p in c_parsed] + [False])
    dup = np.flatnonzero(in_rest[r_codes] & in_common[c_codes])
    if dup.size:
        raise _BadSample(int(dup[0]), "duplicate label name")
    org_ids = {p.get(ORG_LABEL) for p in (*c_parsed, *r_parsed)} - {None}
    labels = {k for p in r_parsed for k in p} - _COMMON_LABELS
    cols: dict[str, object] = {"timestamp": _timestamps(stamps, stamp, len(values))}
    for col, label in (("service_id", SERVICE_LABEL), ("service_name", NAME_LABEL)):
        cols[col] = _spread(label, c_parsed, c_codes, r_parsed, r_codes)
    cols["metric"] = pd.Categorical.from_codes(codes, categories=pd.Index(metrics, dtype=str))
    for label in label_columns(labels):
        cols[label] = _spread(label, c_parsed, c_codes, r_parsed, r_codes)
    cols["value"] = values
    frame = pd.DataFrame(cols)
    frame.attrs.update(
        types={m: types.get(m, "untyped") for m in metrics},
        help={m: helps[m] for m in metrics if m in helps},
        org_id=org_ids.pop() if len(org_ids) == 1 else None,
    )
    return frame


def _timestamps(stamps: np.ndarray | None, stamp: pd.Timestamp, n: int) -> pd.DatetimeIndex:
    default = np.datetime64(stamp.value // 1000, "us")
    if stamps is None:
        return pd.DatetimeIndex(np.full(n, default), tz="UTC")
    own = stamps != ""
    for i in np.flatnonzero(own):
        # The format's timestamps are int64 ms; past what µs can hold, no time is meant.
        if abs(int(stamps[i])) > _MAX_MS:
            raise _BadSample(int(i), "timestamp out of range")
    ms = np.where(own, stamps, "0").astype(np.int64)
    at = np.where(own, (ms * 1000).astype("datetime64[us]"), default)
    return pd.DatetimeIndex(at, tz="UTC")


def _spread(
    label: str,
    c_parsed: list[dict[str, str]],
    c_codes: np.ndarray,
    r_parsed: list[dict[str, str]],
    r_codes: np.ndarray,
) -> pd.Categorical:
    """One categorical column from the label's value in each distinct common/rest string."""
    per_c = [p.get(label) for p in c_parsed]
    per_r = [p.get(label) for p in r_parsed]
    cats = pd.Index(dict.fromkeys(v for v in (*per_c, *per_r) if v is not None), dtype=str)
    lookup = {v: i for i, v in enumerate(cats)}
    c_map = np.array([lookup.get(v, -1) for v in per_c] + [-1], dtype=np.int32)
    r_map = np.array([lookup.get(v, -1) for v in per_r] + [-1], dtype=np.int32)
    codes = np.where(r_map[r_codes] >= 0, r_map[r_codes], c_map[c_codes])  # -1 picks the pad
    return pd.Categorical.from_codes(codes, categories=cats)


class _BadSample(Exception):
    def __init__(self, index: int, reason: str) -> None:
        self.index = index  # of the sample, counted among samples
        self.reason = reason


def _parse_all(uniq: list[str], codes: np.ndarray) -> list[dict[str, str]]:
    out = []
    for i, block in enumerate(uniq):
        labels = _labels(block)
        if labels is None:
            raise _BadSample(int(np.argmax(codes == i)), "duplicate label name")
        out.append(labels)
    return out


def _unescape(s: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], s) if "\\" in s else s


def _labels(block: str) -> dict[str, str] | None:
    """The labels of one ``{…}`` body, or None when a name repeats."""
    pairs = _PAIRS.findall(block)
    out = {k: _unescape(v) for k, v in pairs}
    return out if len(out) == len(pairs) else None


# --- the slow path: only once a line has failed to match -------------------------------


def _raise_first_bad_line(text: str) -> NoReturn:
    for lineno, line in enumerate(text.split("\n"), 1):
        blank_or_comment = not line.strip(" \t") or line.startswith("#")
        if not blank_or_comment and _SAMPLE_LINE.fullmatch(line) is None:
            raise PrometheusParseError(lineno, line, _diagnose(line))
    raise AssertionError("a line failed the scan but parses alone")  # pragma: no cover


def _diagnose(line: str) -> str:
    """Name the first thing wrong with a sample line."""
    m = re.match(_NAME, line)
    if m is None:
        return "line does not start with a metric name"
    rest = line[m.end() :].lstrip(" \t")
    if rest.startswith("{"):
        close = _closing_brace(rest)
        if close < 0:
            return "unterminated label set"
        inner = rest[1:close]
        if re.search(r'\\[^\\"n]', inner):
            return 'bad label escape (only \\\\, \\" and \\n are allowed)'
        if re.fullmatch(_LABELS, inner) is None:
            return "malformed label set"
        names = [k for k, _ in _PAIRS.findall(inner)]
        if len(names) != len(set(names)):
            return "duplicate label name"
        rest = rest[close + 1 :]
    parts = rest.split()
    if not parts:
        return "missing value"
    if re.fullmatch(_VALUE, parts[0]) is None:
        return f"bad number {parts[0]!r}"
    if len(parts) > 2 or (len(parts) == 2 and re.fullmatch(r"-?[0-9]+", parts[1]) is None):
        return "bad timestamp or trailing text"
    return "malformed sample"


def _closing_brace(s: str) -> int:
    in_str = escaped = False
    for i, ch in enumerate(s):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            in_str = not in_str
        elif ch == "}" and not in_str:
            return i
    return -1
