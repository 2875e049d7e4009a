"""The one reader of Kubernetes manifests: a YAML file in, JSON-like documents out, as the API
server would read them -- or one :class:`ManifestError` line naming the file and the line.

``hfai-runtime check``, ``run-local`` and ``job submit`` read a manifest once, here, and pass the
documents on: the body ``job submit`` sends is the one ``check`` judged.

**What the API server reads.** ``kubectl`` and the API server turn YAML into JSON with
``sigs.k8s.io/yaml``, whose YAML 1.1 scalar rules are its ``goyaml.v2`` fork
(``goyaml.v2/resolve.go``, kubernetes-sigs/yaml@742f5e6; ``decode.go`` keeps timestamps as
strings "for backward compatibility"). So, unlike PyYAML's ``safe_load``:

* timestamps stay strings (``2024-01-01`` is the string ``"2024-01-01"``);
* sexagesimal numbers stay strings (``1:30`` is ``"1:30"``, not 5400);
* integers are Go's ``strconv.ParseInt(s, 0, 64)`` with ``_`` removed: ``0755`` is 493, ``0o17``
  is 15, ``0x1F`` is 31, ``0b101`` is 5, ``08`` is the float 8.0;
* ``y``/``Y``/``n``/``N`` are booleans too, besides ``yes``/``no``/``on``/``off``/``true``/``false``
  (quote them to keep the string);
* a float that overflows (``1e999``) stays a string; ``.nan`` and ``.inf`` are refused (JSON has
  no such numbers, so the API server's ``json.Marshal`` fails on them);
* map keys become JSON strings (``1`` -> ``"1"``, ``true`` -> ``"true"``, ``null`` -> ``"null"``);
  a float or a collection as a key is refused.

**What it refuses** (each a :class:`ManifestError`, before it costs time or memory): anything but
a regular file (a FIFO is never waited on: it is opened with ``O_NONBLOCK``); more than
:data:`MAX_BYTES`; not UTF-8; not YAML; nesting deeper than :data:`MAX_DEPTH`; more than
:data:`MAX_NODES` values once aliases are expanded (a "billion laughs" bomb is refused at the
alias that crosses the limit, without expanding it); more than :data:`MAX_DOCUMENTS` documents;
a key twice in one mapping (the API server's strict field validation refuses it, and otherwise
the last one silently wins); tags other than YAML's own scalar/collection tags; a document that
is not a mapping. No message or ``repr`` quotes more than :data:`SHOWN_CHARS` characters of the
input.

The composition is event-driven over libyaml's parser and iterative: no recursion, so no
``RecursionError`` however the input nests.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The API server refuses request bodies above 3 MiB and etcd objects above 1.5 MiB; a job
#: manifest is a few KiB. Parsing is linear, so this bounds time and memory too.
MAX_BYTES = 1 << 20
#: A PodSpec inside a PyTorchJob is about 15 levels deep; nothing in Kubernetes needs 64.
MAX_DEPTH = 64
#: Values (scalars and collections) in the file with every alias expanded: what any later walk
#: over the documents (the checks, ``json.dumps``, an error message) can cost.
MAX_NODES = 100_000
MAX_DOCUMENTS = 100
#: An unquoted number longer than this is refused rather than read (an int64 has 19 digits; a
#: longer one would cost quadratic time to convert).
MAX_NUMBER_CHARS = 400
#: How much of a key or value an error message quotes.
SHOWN_CHARS = 60

_CORE = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (f"{_CORE}{t}" for t in ("str", "int", "float", "bool", "null"))
_SCALAR_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, f"{_CORE}timestamp", "!"})
_COLLECTION_TAGS = frozenset({f"{_CORE}map", f"{_CORE}seq", f"{_CORE}omap", "!"})
# goyaml.v2/resolve.go resolveMapList: looked up before any number parsing.
_WORDS: dict[str, Any] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_MERGE = "<<"
# goyaml.v2/resolve.go yamlStyleFloat, and Go's strconv.ParseInt(s, 0, 64) syntax.
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_GO_INT = re.compile(r"([-+]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")


class ManifestError(ValueError):
    """A manifest that cannot be read: names the file, the line where known, and what is wrong.

    ``str()`` is one line; ``repr()`` is bounded too (the message never quotes the input at
    length, and never an expanded alias)."""

    def __init__(self, source: str, reason: str, line: int | None = None):
        self.source, self.reason, self.line = source, reason, line
        where = f" line {line}:" if line is not None else ""
        super().__init__(f"{source}:{where} {reason}".replace("\n", "\\n").replace("\r", "\\r"))


@dataclass(frozen=True)
class Manifest:
    """The documents of one manifest file, in order, each a JSON-like ``dict`` (no shared
    objects: an alias is a copy); ``lines[i]`` is where document ``i`` starts."""

    source: str
    documents: tuple[dict, ...]
    lines: tuple[int, ...] = field(default=(), compare=False)


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read and parse the manifest file at ``path`` (see the module docstring for the rules)."""
    source = os.fspath(path)
    return parse_manifest(_read_regular_file(Path(path), source), source)


def parse_manifest(text: str, source: str = "<manifest>") -> Manifest:
    """Parse manifest ``text`` (already read); ``source`` names it in errors."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise ManifestError(source, f"more than {MAX_BYTES} bytes; a job manifest is a few KiB")
    documents, lines = _Composer(source).documents(text)
    for number, (doc, line) in enumerate(zip(documents, lines), 1):
        if not isinstance(doc, dict):
            raise ManifestError(
                source, f"document {number} is a {_type_name(doc)}, not a Kubernetes object", line
            )
    if not documents:
        raise ManifestError(source, "no Kubernetes objects in it")
    return Manifest(source, tuple(documents), tuple(lines))


def shown(value: Any) -> str:
    """``repr(value)`` cut to :data:`SHOWN_CHARS` characters, for messages about input."""
    plain = isinstance(value, (str, int, float)) or value is None
    text = repr(value) if plain else f"a {_type_name(value)}"
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _read_regular_file(path: Path, source: str) -> str:
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as error:
        raise ManifestError(source, f"cannot read: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(source, "not a regular file (a folder, FIFO, device or socket is never read)")
        if info.st_size > MAX_BYTES:
            raise ManifestError(source, f"{info.st_size} bytes; a manifest is at most {MAX_BYTES} bytes here")
        chunks, size = [], 0
        while chunk := os.read(fd, MAX_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BYTES:
                raise ManifestError(source, f"grew past {MAX_BYTES} bytes while read")
    except OSError as error:
        raise ManifestError(source, f"cannot read: {error.strerror}") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(source, f"not UTF-8 text (byte {error.start})") from None


def _type_name(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


@dataclass
class _Collection:
    """A mapping or list being built; ``size`` counts its values, aliases expanded."""

    value: dict | list
    line: int
    anchor: str | None
    size: int = 1
    key: Any = None  # a mapping's key waiting for its value
    key_line: int = 0
    has_key: bool = False
    explicit: dict[str, int] = field(default_factory=dict)  # key -> line, not from a merge


class _Composer:
    """Builds documents from libyaml's events, checking the limits as each event arrives."""

    def __init__(self, source: str):
        self.source = source
        self.stack: list[_Collection] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.nodes = 0
        self.root: Any = None

    def fail(self, reason: str, line: int | None = None) -> ManifestError:
        return ManifestError(self.source, reason, line)

    def documents(self, text: str) -> tuple[list, list[int]]:
        documents: list = []
        lines: list[int] = []
        try:
            for event in _events(text):
                line = event.start_mark.line + 1
                if isinstance(event, yaml.DocumentStartEvent):
                    if len(lines) >= MAX_DOCUMENTS:
                        raise self.fail(f"more than {MAX_DOCUMENTS} documents", line)
                    self.root, self.anchors = None, {}
                    lines.append(line)
                elif isinstance(event, yaml.DocumentEndEvent):
                    documents.append(self.root)
                else:
                    self.on_node_event(event, line)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            reason = " ".join(str(error.problem or error.context or "not YAML").split())
            raise self.fail(f"not YAML: {reason}", mark.line + 1 if mark else None) from None
        except yaml.YAMLError as error:
            raise self.fail(f"not YAML: {' '.join(str(error).split())[:200]}") from None
        kept = [(doc, line) for doc, line in zip(documents, lines) if doc is not None]
        return [doc for doc, _ in kept], [line for _, line in kept]

    def on_node_event(self, event: yaml.Event, line: int) -> None:
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(self.stack) >= MAX_DEPTH:
                raise self.fail(f"nested deeper than {MAX_DEPTH} levels", line)
            if event.tag not in (None, *_COLLECTION_TAGS):
                raise self.fail(f"tag {shown(event.tag)} has no meaning in a Kubernetes manifest", line)
            self.count(1, line)
            value: dict | list = {} if isinstance(event, yaml.MappingStartEvent) else []
            self.stack.append(_Collection(value, line, event.anchor))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            done = self.stack.pop()
            if done.anchor is not None:
                self.anchors[done.anchor] = (done.value, done.size)
            self.add(done.value, done.size, done.line, plain_merge=False)
        elif isinstance(event, yaml.ScalarEvent):
            self.count(1, line)
            value = self.scalar(event, line)
            if event.anchor is not None:
                self.anchors[event.anchor] = (value, 1)
            merge = event.tag is None and event.implicit[0] and event.value == _MERGE
            self.add(value, 1, line, plain_merge=merge)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise self.fail(f"alias *{shown(event.anchor)[1:-1]} names no anchor before it", line)
            value, size = self.anchors[event.anchor]
            # Counted before it is copied: a bomb stops here, unexpanded.
            self.count(size, line)
            self.add(_copy(value), size, line, plain_merge=False)

    def count(self, nodes: int, line: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise self.fail(
                f"more than {MAX_NODES} values with aliases expanded (an alias bomb, or not a job manifest)",
                line,
            )

    def add(self, value: Any, size: int, line: int, plain_merge: bool) -> None:
        if not self.stack:
            self.root = value
            return
        parent = self.stack[-1]
        parent.size += size
        if isinstance(parent.value, list):
            parent.value.append(value)
        elif not parent.has_key:
            parent.key = _MERGE_KEY if plain_merge else self.json_key(value, line)
            parent.key_line, parent.has_key = line, True
        else:
            self.set_item(parent, value)

    def set_item(self, mapping: _Collection, value: Any) -> None:
        key, line = mapping.key, mapping.key_line
        mapping.has_key = False
        assert isinstance(mapping.value, dict)
        if key is _MERGE_KEY:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, dict) for s in sources):
                raise self.fail("a merge key (<<) takes a mapping or a list of mappings", line)
            for merged in sources:
                for name, item in merged.items():
                    if name not in mapping.explicit and name not in mapping.value:
                        mapping.value[name] = item
            return
        if key in mapping.explicit:
            raise self.fail(
                f"key {shown(key)} is given twice in one mapping (first on line "
                f"{mapping.explicit[key]}); the API server refuses duplicate fields",
                line,
            )
        mapping.explicit[key] = line
        mapping.value[key] = value

    def json_key(self, key: Any, line: int) -> str:
        """A key as ``sigs.k8s.io/yaml`` writes it into JSON."""
        if isinstance(key, str):
            return key
        if isinstance(key, bool):
            return "true" if key else "false"
        if isinstance(key, int):
            return str(key)
        if key is None:
            return "null"
        raise self.fail(f"a {_type_name(key)} as a mapping key (quote the key)", line)

    def scalar(self, event: yaml.ScalarEvent, line: int) -> Any:
        tag, text = event.tag, event.value
        if tag is not None and tag not in _SCALAR_TAGS:
            raise self.fail(f"tag {shown(tag)} has no meaning in a Kubernetes manifest", line)
        if tag in (_STR, "!", f"{_CORE}timestamp") or (tag is None and not event.implicit[0]):
            return text  # quoted, or explicitly a string
        try:
            value = resolve_plain(text)
        except ValueError as error:
            raise self.fail(f"{shown(text)}: {error}", line) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(
                f"{shown(text)} is not a number JSON can hold (the API server refuses it); "
                "quote it for a string",
                line,
            )
        if tag is not None and not _matches(tag, value):
            raise self.fail(f"{shown(text)} cannot be read as !!{tag[len(_CORE) :]}", line)
        return float(value) if tag == _FLOAT and isinstance(value, int) else value


_MERGE_KEY = object()


def resolve_plain(text: str) -> Any:
    """An unquoted scalar as ``goyaml.v2/resolve.go`` ``resolve`` reads it (see the module
    docstring): ``None``, a bool, an int, a float, or the text itself; ValueError for a number
    longer than :data:`MAX_NUMBER_CHARS`.

    Timestamps need no rule of their own here: they start with four digits and a ``-``, which
    no integer or float does, so they stay strings as the API server keeps them.
    """
    if text in _WORDS:
        return _WORDS[text]
    if text[:1] == ".":
        return float(text) if _DOT_FLOAT.fullmatch(text) else text
    if not text or text[0] not in "+-0123456789":
        return text
    plain = text.replace("_", "")
    if len(plain) > MAX_NUMBER_CHARS and (_GO_INT.fullmatch(plain) or _YAML_FLOAT.fullmatch(plain)):
        raise ValueError(f"a number of more than {MAX_NUMBER_CHARS} characters (quote it for a string)")
    number = _GO_INT.fullmatch(plain)
    if number:
        sign, digits = number.groups()
        value = _go_int(digits)
        return -value if sign == "-" else value
    if _YAML_FLOAT.fullmatch(plain):
        value = float(plain)
        if math.isfinite(value):  # Go's ParseFloat fails on overflow: the text stays a string
            return value
    return text


def _go_int(digits: str) -> int:
    """An unsigned Go integer literal: ``0x``/``0o``/``0b`` prefixes, a leading ``0`` octal."""
    prefix = digits[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        return int(digits[2:], {"0x": 16, "0o": 8, "0b": 2}[prefix])
    if len(digits) > 1 and digits[0] == "0":
        return int(digits, 8)
    return int(digits)


def _matches(tag: str, value: Any) -> bool:
    if tag == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if tag == _FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tag == _BOOL:
        return isinstance(value, bool)
    return value is None  # _NULL


def _copy(value: Any) -> Any:
    """A deep copy of a composed value, iteratively (its size is already counted and bounded)."""
    if not isinstance(value, (dict, list)):
        return value
    top: dict | list = {} if isinstance(value, dict) else []
    work = [(value, top)]
    while work:
        source, target = work.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            copied = item
            if isinstance(item, (dict, list)):
                copied = {} if isinstance(item, dict) else []
                work.append((item, copied))
            if isinstance(target, dict):
                target[key] = copied
            else:
                target.append(copied)
    return top


def _events(text: str) -> Iterator[yaml.Event]:
    """libyaml's parse events (PyYAML's pure-Python parser where libyaml is missing)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        while loader.check_event():
            yield loader.get_event()
    finally:
        loader.dispose()
