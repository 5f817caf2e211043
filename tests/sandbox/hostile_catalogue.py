"""The hostile inputs of tests/sandbox/test_hostile_input.py, by what they attack.

A :class:`Target` is one path of the app's route table with its methods and what
the spec says each takes (request body schema, query parameters). :func:`cases_for`
turns a target into requests, each invalid for that route:

- **path ids**: another org, non-UUIDs, NUL, newline, 3,000 characters, invalid
  UTF-8, dot-dot; the real service's id in other spellings (GET only);
- **methods** the path does not serve, and the path with a trailing slash;
- **bodies**, whole: broken, truncated or doubled JSON, non-objects, 100,000 levels
  of nesting, invalid UTF-8, a BOM, UTF-16, wrong or missing content types, a
  non-UTF-8 charset, 1 MiB and more (announced, and chunked), an unknown property,
  a missing body where one is needed;
- **bodies, field by field** (from a valid base body): wrong JSON types, empty,
  NUL, newline, ESC, C1 and DEL characters, lone surrogates, 100,000 characters,
  NaN/Infinity/1e400, integers past 64 bits and of 5,000 digits, a name given twice;
  tags, pgConfig and pgBouncerConfig each with their own catalogue;
- **query parameters**, one at a time (from valid base parameters): missing, empty,
  wrong types, overflow, non-ASCII digits, ``1_0``, hex, leading spaces, dates out
  of range or without a time zone or past millisecond precision, enum values
  in the wrong case, NUL and newline, given twice, 8,000 characters; and windows
  that are backwards or too long.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import BaseRoute, Route

from pgcloud_nb.sandbox import SandboxInfo

WINDOW = {"from_date": "2026-01-01T00:00:00Z", "to_date": "2026-01-02T00:00:00Z"}
# The app's path parameters and the spec's names for them.
SPEC_NAMES = {"org_id": "organizationId", "service_id": "postgresId", "query_id": "queryId"}
# Valid bodies the field mutations start from (checked against the spec by the test).
BASE_BODIES: dict[str, dict[str, Any]] = {
    "PostgresServicePostRequest": {
        "name": "hostile base",
        "provider": "aws",
        "region": "us-west-2",
        "size": "r8gd.large",
        "postgresVersion": "17",
    },
    "PostgresServicePatchRequest": {"name": "hostile base"},
    "PostgresServiceSetPassword": {"password": "Valid-Passw0rd-123"},
    "PostgresServiceSetState": {"command": "restart"},
    "postgresInstanceConfig": {
        "pgConfig": {"work_mem": "4MB"},
        "pgBouncerConfig": {"default_pool_size": "16"},
    },
    "PostgresServiceReadReplicaRequest": {"name": "hostile replica"},
    "PostgresServiceRestoreRequest": {
        "name": "hostile restore",
        "restoreTarget": WINDOW["to_date"],
    },
}
# Bodies whose absence is itself a valid request (a merge patch of nothing; a password
# reset that asks the server for a password).
EMPTY_IS_VALID = {"PostgresServicePatchRequest", "PostgresServiceSetPassword"}
# Query strings the sandbox checks against a list of its own (the spec says "string").
CHOICES = {"severity", "db_operation"}
FREE_TEXT_BASE = {"db_name": "postgres", "db_user": "postgres", "db_operation": "SELECT"}
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Case:
    """One request, and what its answer must be (a status among ``expect``, naming ``names``)."""

    method: str
    path: str
    params: list[tuple[str, str]] | None = None
    content: Callable[[], bytes | Iterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect: frozenset[int] = frozenset({400})
    names: str | None = None
    label: str = ""

    def describe(self) -> str:
        return f"{self.method} {self.path[:120]} [{self.label}]"


@dataclass(frozen=True)
class Target:
    """A path of the app and, per method, the spec's operation (None where it has none)."""

    template: str
    methods: tuple[str, ...]
    ops: dict[str, dict[str, Any] | None]

    def fill(self, ids: dict[str, str], **changed: str) -> str:
        path = self.template
        for name, value in {**ids, **changed}.items():
            path = path.replace("{" + name + "}", value)
        return path

    def params(self) -> list[str]:
        return [p for p in SPEC_NAMES if "{" + p + "}" in self.template]


def targets(routes: Iterable[BaseRoute], spec_doc: dict[str, Any]) -> list[Target]:
    """One target per path of the app's routes, with the spec's operations."""
    methods: dict[str, set[str]] = {}
    for route in routes:
        assert isinstance(route, Route), route
        methods.setdefault(route.path, set()).update((route.methods or set()) - {"HEAD"})
    out = []
    for path, found in methods.items():
        spec_path = path
        for app_name, spec_name in SPEC_NAMES.items():
            spec_path = spec_path.replace("{" + app_name + "}", "{" + spec_name + "}")
        item = spec_doc["paths"].get(spec_path, {})
        ops = {m: item.get(m.lower()) for m in sorted(found)}
        out.append(Target(path, tuple(sorted(found)), ops))
    return out


def _body_schema(op: dict[str, Any] | None) -> str | None:
    content = ((op or {}).get("requestBody") or {}).get("content") or {}
    ref = (content.get("application/json") or {}).get("schema", {}).get("$ref", "")
    return ref.rsplit("/", 1)[-1] or None


def _json(body: Any) -> Callable[[], bytes]:
    data = json.dumps(body, ensure_ascii=True).encode()  # lone surrogates as \\ud800 escapes
    return lambda: data


def _raw(data: bytes) -> Callable[[], bytes]:
    return lambda: data


# -- auth ------------------------------------------------------------------------------


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


AUTH_VARIANTS: list[tuple[str, Callable[[SandboxInfo], dict[str, str]]]] = [
    ("no credentials", lambda sb: {}),
    ("wrong secret", lambda sb: {"authorization": _basic(sb.key_id, "not-the-secret")}),
    ("made-up key", lambda sb: {"authorization": _basic(uuid.uuid4().hex, sb.key_secret)}),
    ("not base64", lambda sb: {"authorization": "Basic !!!not-base64!!!"}),
    ("bearer secret", lambda sb: {"authorization": f"Bearer {sb.key_secret}"}),
    (
        "key id only",
        lambda sb: {"authorization": "Basic " + base64.b64encode(sb.key_id.encode()).decode()},
    ),
    ("scheme alone", lambda sb: {"authorization": "Basic"}),
    ("secret as user", lambda sb: {"authorization": _basic(sb.key_secret, sb.key_id)}),
    ("key with NUL", lambda sb: {"authorization": _basic(sb.key_id + "\x00", sb.key_secret)}),
    ("secret with suffix", lambda sb: {"authorization": _basic(sb.key_id, sb.key_secret + "x")}),
    ("secret prefix", lambda sb: {"authorization": _basic(sb.key_id, sb.key_secret[:-1])}),
]


# -- paths and methods -------------------------------------------------------------------


def _path_cases(target: Target, ids: dict[str, str]) -> Iterator[Case]:
    real = ids.get("service_id", "")
    bad = {
        "org_id": [
            ("another org", str(uuid.uuid4())),
            ("not a UUID", "not-an-org"),
            ("NUL", "%00"),
            ("newline", "%0A"),
            ("3,000 characters", "o" * 3000),
            ("invalid UTF-8", "%FF%FE"),
            ("dot-dot", "%2E%2E"),
        ],
        "service_id": [
            ("not a UUID", "not-a-uuid"),
            ("NUL", "%00"),
            ("newline", "%0A"),
            ("3,000 characters", "s" * 3000),
            ("invalid UTF-8", "%FF"),
            ("dot-dot", "%2E%2E"),
            ("negative", "-1"),
            ("another UUID", str(uuid.uuid4())),
            ("UUID with NUL", real[:-1] + "%00"),
        ],
        "query_id": [
            ("letters", "abc"),
            ("underscore", "1_0"),
            ("leading space", "%201"),
            ("past 64 bits", str(2**64)),
            ("5,000 digits", "9" * 5000),
            ("NUL", "%00"),
            ("minus only", "-"),
            ("non-ASCII digits", "%D9%A1%D9%A2"),
        ],
    }
    spellings = [
        ("upper case", real.upper()),
        ("braces", "%7B" + real + "%7D"),
        ("urn", "urn:uuid:" + real),
        ("no hyphens", real.replace("-", "")),
    ]
    for method in target.methods:
        schema = _body_schema(target.ops.get(method))
        content = _json(BASE_BODIES[schema]) if schema else None
        headers = JSON if schema else {}
        for param in target.params():
            for label, value in bad[param]:
                expect = {"org_id": {404}, "query_id": {400}}.get(param)
                if param == "service_id":
                    expect = {404} if label == "another UUID" else {400}
                yield Case(
                    method,
                    target.fill(ids, **{param: value}),
                    content=content,
                    headers=headers,
                    expect=frozenset(expect or ()),
                    label=f"{param}: {label}",
                )
            if param == "service_id" and method == "GET":  # never a write: it could be the real one
                for label, value in spellings:
                    yield Case(
                        method,
                        target.fill(ids, service_id=value),
                        expect=frozenset({400, 404}),
                        label=f"service_id: {label}",
                    )
    path = target.fill(ids)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        if method not in target.methods:
            # 405; or 400 where a templated path takes it (PATCH …/postgres/prometheus is
            # PATCH …/postgres/{postgresId} with an id that is no UUID).
            yield Case(method, path, expect=frozenset({400, 405}), label="method not allowed")
    for method in target.methods:
        yield Case(method, path + "/", expect=frozenset({404}), label="trailing slash")


# -- bodies ------------------------------------------------------------------------------

RAW_TOKENS = [
    ("NaN", b"NaN"),
    ("Infinity", b"Infinity"),
    ("-Infinity", b"-Infinity"),
    ("1e400", b"1e400"),
    ("-1e400", b"-1e400"),
    ("past 64 bits", b"18446744073709551616"),
    ("400 digits", b"9" * 400),
    ("5,000 digits", b"1" * 5000),
]


def _string_values(base: str) -> list[tuple[str, Any]]:
    return [
        ("a number", 12345),
        ("a float", 1.5),
        ("true", True),
        ("null", None),
        ("a list", [base]),
        ("an object", {"v": base}),
        ("empty", ""),
        ("NUL inside", base[:1] + "\x00" + base[1:]),
        ("NUL first", "\x00" + base),
        ("newline at the end", base + "\n"),
        ("ESC", "\x1b[31m" + base),
        ("C1 control", base + "\x85"),
        ("DEL", base + "\x7f"),
        ("bidirectional override", "\u202e" + base),
        ("lone high surrogate", base + "\ud800"),
        ("lone low surrogate", "\udfff" + base),
        ("100,000 characters", "x" * 100_000),
    ]


TAGS: list[tuple[str, Any, str]] = [
    ("a string", "prod", ""),
    ("a number", 1, ""),
    ("null", None, ""),
    ("an object", {}, ""),
    ("a number item", [1], "[0]"),
    ("newline in a key", [{"key": "k\n", "value": "v"}], "[0].key"),
    ("newline in a value", [{"key": "k", "value": "v\n"}], "[0].value"),
    ("empty key", [{"key": "", "value": "v"}], "[0].key"),
    ("129-character key", [{"key": "k" * 129, "value": "v"}], "[0].key"),
    ("257-character value", [{"key": "k", "value": "v" * 257}], "[0].value"),
    ("NUL in a key", [{"key": "k\x00", "value": "v"}], "[0].key"),
    ("surrogate in a value", [{"key": "k", "value": "\ud800"}], "[0].value"),
    ("non-ASCII key", [{"key": "ünï", "value": "v"}], "[0].key"),
    ("non-ASCII digits", [{"key": "k", "value": "\u0661\u0662"}], "[0].value"),
    ("space in a key", [{"key": "a b", "value": "v"}], "[0].key"),
    ("51 tags", [{"key": f"k{i}", "value": "v"} for i in range(51)], ""),
]
PG_CONFIG: list[tuple[str, Any, str]] = [
    ("a string", "s", ""),
    ("a number", 1, ""),
    ("a list", [], ""),
    ("null", None, ""),
    ("unknown key", {"no_such_setting": "1"}, ".no_such_setting"),
    ("a server-only key", {"listen_addresses": "*"}, ".listen_addresses"),
    ("newline in a key", {"work_mem\n": "4MB"}, ""),
    ("NUL in a value", {"work_mem": "4MB\x00"}, ".work_mem"),
    ("a second line", {"work_mem": "4MB\nlisten_addresses='*'"}, ".work_mem"),
    (
        "a newer major's key, two lines",
        {"transaction_timeout": "5s\nlisten_addresses='*'"},
        ".transaction_timeout",
    ),
    ("a newer major's key, no unit", {"transaction_timeout": "5 parsecs"}, ".transaction_timeout"),
    ("a newer major's key, 400 digits", {"transaction_timeout": "9" * 400}, ".transaction_timeout"),
    ("a newer major's key, a quote", {"transaction_timeout": "5s' x"}, ".transaction_timeout"),
    ("minutes as m", {"idle_session_timeout": "2m"}, ".idle_session_timeout"),
    ("a list value", {"work_mem": ["4MB"]}, ".work_mem"),
    ("null value", {"work_mem": None}, ".work_mem"),
    ("true", {"max_connections": True}, ".max_connections"),
    ("below the minimum", {"max_connections": 0}, ".max_connections"),
    ("NaN text", {"random_page_cost": "NaN"}, ".random_page_cost"),
    ("Infinity text", {"random_page_cost": "Infinity"}, ".random_page_cost"),
    ("a unit on a real", {"random_page_cost": "4ms"}, ".random_page_cost"),
    ("empty enum", {"wal_compression": ""}, ".wal_compression"),
    ("enum with newline", {"wal_compression": "lz4\n"}, ".wal_compression"),
    ("a huge value", {"work_mem": "1" * 100_000}, ".work_mem"),
]
BOUNCER: list[tuple[str, Any, str]] = [
    ("a string", "s", ""),
    ("a number", 1, ""),
    ("a list", [], ""),
    ("a number value", {"k": 1}, ".k"),
    ("null value", {"k": None}, ".k"),
    ("newline in a value", {"pool_mode": "transaction\n"}, ".pool_mode"),
    ("NUL in a key", {"k\x00": "v"}, ""),
    ("surrogate in a value", {"k": "\ud800"}, ".k"),
    ("65 settings", {f"k{i}": "v" for i in range(65)}, ""),
]
PROPERTY_VALUES = {"tags": TAGS, "pgConfig": PG_CONFIG, "pgBouncerConfig": BOUNCER}


def _whole_bodies(
    base: dict[str, Any], schema: str
) -> Iterator[tuple[str, Any, dict[str, str], int]]:
    """(label, content, headers, status) for the body as a whole."""
    good = json.dumps(base).encode()
    first = next(iter(base))
    yield from [
        ("invalid JSON", b"{nope", JSON, 400),
        ("truncated", good[:-1], JSON, 400),
        ("trailing garbage", good + b" x", JSON, 400),
        ("two documents", good + good, JSON, 400),
        ("null", b"null", JSON, 400),
        ("a list", b"[1, 2]", JSON, 400),
        ("a string", b'"x"', JSON, 400),
        ("a number", b"42", JSON, 400),
        ("true", b"true", JSON, 400),
        ("100,000 [", b"[" * 100_000, JSON, 400),
        ("100,000 objects", b'{"a":' * 100_000, JSON, 400),
        (
            "40 levels in a field",
            json.dumps({**base, first: "@"}).encode().replace(b'"@"', b"[" * 40 + b"]" * 40),
            JSON,
            400,
        ),
        ("invalid UTF-8", good.replace(b'"', b'"\xff\xfe', 1), JSON, 400),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + good, JSON, 400),
        ("UTF-16", json.dumps(base).encode("utf-16"), JSON, 400),
        ("text/plain", good, {"content-type": "text/plain"}, 400),
        ("a form", b"name=x&size=y", {"content-type": "application/x-www-form-urlencoded"}, 400),
        (
            "multipart",
            b"--b\r\n\r\nx\r\n--b--",
            {"content-type": "multipart/form-data; boundary=b"},
            400,
        ),
        ("XML", b"<name>x</name>", {"content-type": "application/xml"}, 400),
        ("no content type", good, {}, 400),
        ("JSONP", good, {"content-type": "application/jsonp"}, 400),
        ("latin-1 charset", good, {"content-type": "application/json; charset=latin-1"}, 400),
        ("unknown property", json.dumps({**base, "zzz": 1}).encode(), JSON, 400),
        ("1 MiB and more", json.dumps({**base, "zzz": "x" * (1 << 20)}).encode(), JSON, 413),
    ]
    if schema not in EMPTY_IS_VALID:
        yield ("no body", b"", {}, 400)
    for key in base:
        text = json.dumps({key: base[key]})[1:-1].encode()
        yield (f"{key} given twice", b"{" + text + b", " + good[1:], JSON, 400)


def _body_cases(path: str, method: str, schema: str, resolved: dict[str, Any]) -> Iterator[Case]:
    base = BASE_BODIES[schema]
    for label, data, headers, status in _whole_bodies(base, schema):
        chunks = label == "1 MiB and more" and method == "PATCH"  # chunked: no Content-Length
        content = (
            (lambda d=data: iter([d[i : i + 65536] for i in range(0, len(d), 65536)]))
            if chunks
            else _raw(data)
        )
        yield Case(
            method, path, content=content, headers=headers, expect=frozenset({status}), label=label
        )
    for prop in resolved.get("properties", {}):
        values = PROPERTY_VALUES.get(prop)
        if values is None:
            values = [(label, v, "") for label, v in _string_values(str(base.get(prop, "value")))]
            for label, token in RAW_TOKENS:
                data = json.dumps({**base, prop: "@"}).encode().replace(b'"@"', token)
                yield Case(
                    method,
                    path,
                    content=_raw(data),
                    headers=JSON,
                    names=f"request body.{prop}",
                    label=f"{prop}: {label}",
                )
        for label, value, suffix in values:
            where = prop + suffix
            names = (
                f"validated: {where}" if label.startswith(("unknown", "a server-only")) else where
            )
            yield Case(
                method,
                path,
                content=_json({**base, prop: value}),
                headers=JSON,
                names=names,
                label=f"{prop}: {label}",
            )


# -- query parameters ---------------------------------------------------------------------


def _query_values(name: str, schema: dict[str, Any]) -> list[tuple[str, Any]]:
    common: list[tuple[str, Any]] = [("NUL", "\x00"), ("newline", "a\nb"), ("ESC", "\x1b")]
    if schema.get("type") == "integer":
        top = schema.get("maximum")
        return [
            *common,
            ("empty", ""),
            ("letters", "abc"),
            ("a fraction", "1.5"),
            ("400 digits", "9" * 400),
            ("5,000 digits", "9" * 5000),
            ("underscore", "1_0"),
            ("leading space", " 5"),
            ("hex", "0x10"),
            ("non-ASCII digits", "\u0661\u0662"),
            ("a sign alone", "+"),
            ("below the minimum", str(schema.get("minimum", 0) - 1)),
            *([("above the maximum", str(top + 1))] if top is not None else []),
        ]
    if schema.get("format") == "date-time":
        return [
            *common,
            ("empty", ""),
            ("a word", "yesterday"),
            ("month 13", "2026-13-01T00:00:00Z"),
            ("no time zone", "2026-01-01T00:00:00"),
            ("microseconds", "2026-01-01T00:00:00.000001Z"),
            ("year 0", "0000-01-01T00:00:00Z"),
            ("hour 25", "2026-01-01T25:00:00Z"),
            ("a number", "1e10"),
            ("8,000 characters", "9" * 8000),
        ]
    if "enum" in schema or name in CHOICES:
        first = (schema.get("enum") or ["SELECT"])[0]
        return [
            *common,
            ("empty", ""),
            ("not in the list", "nope"),
            ("other case", first.swapcase()),
            ("a trailing space", first + " "),
            ("8,000 characters", "x" * 8000),
        ]
    return common  # a free-text filter: anything printable is a filter


def _query_cases(path: str, parameters: list[dict[str, Any]]) -> Iterator[Case]:
    query = [p for p in parameters if p.get("in") == "query"]
    base: dict[str, str] = {}
    for p in query:
        if p.get("required"):
            fmt = p["schema"].get("format")
            base[p["name"]] = WINDOW[p["name"]] if fmt == "date-time" else FREE_TEXT_BASE[p["name"]]
    for p in query:
        name = p["name"]
        if p.get("required"):
            rest = [(k, v) for k, v in base.items() if k != name]
            yield Case("GET", path, params=rest, names=name, label=f"{name}: missing")
        for label, value in _query_values(name, p["schema"]):
            params = [*((k, v) for k, v in base.items() if k != name), (name, value)]
            yield Case("GET", path, params=params, names=name, label=f"{name}: {label}")
        twice = [*base.items(), *((name, v) for v in ("1", "2") if name not in base)]
        if name in base:
            twice.append((name, base[name]))
        yield Case("GET", path, params=twice, names=name, label=f"{name}: given twice")
    if {"from_date", "to_date"} <= base.keys():
        back = {**base, "from_date": WINDOW["to_date"], "to_date": WINDOW["from_date"]}
        yield Case(
            "GET", path, params=list(back.items()), names="to_date", label="backwards window"
        )
        if any(p["name"] == "bucket_size_seconds" for p in query):
            year = {**base, "to_date": "2027-01-01T00:00:00Z", "bucket_size_seconds": "1"}
            yield Case(
                "GET",
                path,
                params=list(year.items()),
                names="bucket_size_seconds",
                label="a year in 1 s buckets",
            )
        if any(p["name"] == "severity" for p in query):
            long = {**base, "to_date": "2026-03-01T00:00:00Z"}
            yield Case("GET", path, params=list(long.items()), names="to_date", label="59 days")


def cases_for(
    target: Target, ids: dict[str, str], resolve: Callable[[str], dict[str, Any]]
) -> Iterator[Case]:
    """Every hostile request for ``target``, the live ids filled in."""
    yield from _path_cases(target, ids)
    path = target.fill(ids)
    for method, op in target.ops.items():
        if (schema := _body_schema(op)) is not None:
            yield from _body_cases(path, method, schema, resolve(schema))
        if op and any(p.get("in") == "query" for p in op.get("parameters", [])):
            yield from _query_cases(path, op["parameters"])
