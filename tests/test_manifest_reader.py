"""The one manifest reader (:mod:`hfai_runtime.kube.reader`) and quantities
(:mod:`hfai_runtime.kube.quantity`): what the API server would read, and hostile files refused
in bounded memory and CPU time.

The hostile files go through the real CLIs (``check``, ``run-local``, ``job submit``) in a
subprocess whose address space and CPU time are capped by ``setrlimit``: a reader that expands
an alias bomb or loops on a quantity is killed by the limit instead of passing, and the
assertion is on the one line it prints and on the child's own ``rusage`` (CPU seconds and peak
RSS, which a busy machine does not inflate), never on a wall-clock window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hfai_runtime.check import check_manifest
from hfai_runtime.kube.quantity import MAX_MAGNITUDE, QuantityError, QuantityTooLarge, parse_quantity
from hfai_runtime.kube.reader import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_DOCUMENTS,
    MAX_NODES,
    SHOWN_CHARS,
    Manifest,
    ManifestError,
    parse_manifest,
    read_manifest,
    resolve_plain,
)

#: The issue's bound: no hostile file makes a reader use more than ~100 MB or 5 s. The address
#: space cap is looser than RSS (Python maps more than it touches) and makes a runaway reader
#: die instead of swapping; the asserted bounds are on the child's measured usage.
ADDRESS_SPACE = 1 << 30
CPU_SECONDS = 20
MAX_RSS_BYTES = 100 << 20
MAX_CPU_SECONDS = 5.0

JOB = {
    "apiVersion": "kubeflow.org/v1",
    "kind": "PyTorchJob",
    "metadata": {"name": "det"},
    "spec": {
        "pytorchReplicaSpecs": {
            "Master": {
                "replicas": 1,
                "restartPolicy": "ExitCode",
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "pytorch",
                                "image": "registry.example/det:1",
                                "command": ["python", "-c", "pass"],
                                "resources": {
                                    "requests": {"cpu": "1", "memory": "1Gi"},
                                    "limits": {"cpu": "1", "memory": "1Gi"},
                                },
                            }
                        ]
                    }
                },
            }
        }
    },
}


# -- what the API server reads -------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        # goyaml.v2 decode.go keeps timestamps as strings when decoding into interface{}.
        ("2024-01-01", "2024-01-01"),
        ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z"),
        ("1:30", "1:30"),  # YAML 1.1 sexagesimal: goyaml.v2 leaves it a string (PyYAML: 5400)
        ("0755", 493),  # Go's ParseInt(s, 0, 64): a leading 0 is octal
        ("0o17", 15),
        ("0x1F", 31),
        ("0b101", 5),
        ("-0b101", -5),
        ("1_000", 1000),
        ("08", 8.0),  # not octal, but a YAML float
        ("1e3", 1000.0),
        ("1e999", "1e999"),  # Go's ParseFloat overflows: the text stays
        (".5", 0.5),
        ("yes", True),
        ("y", True),  # goyaml.v2's resolveMapList has y/Y/n/N (PyYAML: strings)
        ("N", False),
        ("off", False),
        ("~", None),
        ("null", None),
        ("abc", "abc"),
        ("+", "+"),
        ("-", "-"),
    ],
)
def test_plain_scalars_resolve_as_goyaml_v2_does(text, expected):
    value = resolve_plain(text)
    assert value == expected and type(value) is type(expected)


def test_a_document_reads_as_the_api_server_reads_it():
    text = "\n".join(
        [
            "a: 2024-01-01",
            "b: '0755'",
            "c: 0755",
            "1: one",
            "true: yes",
            "null: ~",
            "base: &b {cpu: '1', memory: 1Gi}",
            "merged: {<<: *b, memory: 2Gi}",
            "text: !!str 12",
            "f: !!float 3",
        ]
    )
    [doc] = parse_manifest(text).documents
    assert doc == {
        "a": "2024-01-01",
        "b": "0755",
        "c": 493,
        "1": "one",
        "true": True,
        "null": None,
        "base": {"cpu": "1", "memory": "1Gi"},
        "merged": {"cpu": "1", "memory": "2Gi"},
        "text": "12",
        "f": 3.0,
    }
    assert doc["merged"] is not doc["base"]  # an alias is a copy: no shared objects


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "privileged: false\nprivileged: true\n",
            "line 2: key 'privileged' is given twice in one mapping (first on line 1)",
        ),
        ("a:\n  b: 1\n  c: 2\n  b: 3\n", "line 4: key 'b' is given twice"),
        ("1: a\n'1': b\n", "line 2: key '1' is given twice"),  # the same JSON key
        ("a: .nan\n", "line 1: '.nan' is not a number JSON can hold"),
        ("a: -.inf\n", "line 1: '-.inf' is not a number JSON can hold"),
        ("a: !!python/object:os.system x\n", "has no meaning in a Kubernetes manifest"),
        ("a: !custom x\n", "tag '!custom' has no meaning"),
        ("a: !!int x\n", "line 1: 'x' cannot be read as !!int"),
        ("{1.5: a}\n", "a float as a mapping key"),
        ("? [a]\n: b\n", "a list as a mapping key"),
        ("a: *nowhere\n", "names no anchor"),
        ("- a\n", "document 1 is a list, not a Kubernetes object"),
        ("a: b\n---\n- c\n", "line 2: document 2 is a list"),
        ("", "no Kubernetes objects in it"),
        ("a: [b\n", "line 2: not YAML: did not find expected ',' or ']'"),
        ("a: b\n\tc: d\n", "not YAML"),
        ("a: " + "9" * 500 + "\n", "a number of more than 400 characters"),
        ("a: {<<: [x]}\n", "a merge key (<<) takes a mapping"),
    ],
)
def test_what_the_reader_refuses_is_one_line_naming_the_file(text, message):
    with pytest.raises(ManifestError) as refused:
        parse_manifest(text, "k8s/job.yaml")
    line = str(refused.value)
    assert line.startswith("k8s/job.yaml: ") and message in line and "\n" not in line, line


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: os.mkfifo(p), "not a regular file"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: None, "cannot read: No such file or directory"),
        (lambda p: p.write_bytes(b"a: \xff\n"), "not UTF-8 text (byte 3)"),
        (lambda p: os.truncate(p.write_bytes(b"") or p, MAX_BYTES + 1), f"{MAX_BYTES + 1} bytes"),
    ],
)
def test_files_that_are_not_small_regular_utf8_files(tmp_path, make, message):
    path = tmp_path / "job.yaml"
    make(path)
    with pytest.raises(ManifestError) as refused:
        read_manifest(path)
    assert str(refused.value).startswith(f"{path}: ") and message in str(refused.value)


def test_limits_refuse_at_the_boundary_not_below():
    nested = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert parse_manifest(nested).documents  # MAX_DEPTH levels with the top mapping
    with pytest.raises(ManifestError, match=f"line 1: nested deeper than {MAX_DEPTH} levels"):
        parse_manifest("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH)
    docs = "\n---\n".join(["a: b"] * MAX_DOCUMENTS)
    assert len(parse_manifest(docs).documents) == MAX_DOCUMENTS
    with pytest.raises(ManifestError, match=f"more than {MAX_DOCUMENTS} documents"):
        parse_manifest(docs + "\n---\na: b")
    # MAX_NODES counts values with aliases expanded: the mapping, its key and 9 x 9 ... items.
    ten = "a: &a [" + ",".join(["x"] * (MAX_NODES - 3)) + "]"
    assert len(parse_manifest(ten).documents[0]["a"]) == MAX_NODES - 3
    with pytest.raises(ManifestError, match=f"more than {MAX_NODES} values with aliases expanded"):
        parse_manifest(ten + "\nb: *a")


def alias_bomb(levels: int = 9) -> str:
    """Billion laughs: 9 references per level, 9 levels: 9**9 (~387 million) values, ~1 KB."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_unexpanded_and_its_message_is_short():
    text = alias_bomb()
    assert len(text) < 1100
    with pytest.raises(ManifestError) as refused:
        parse_manifest(text, "bomb.yaml")
    assert "with aliases expanded" in str(refused.value)
    assert len(str(refused.value)) < 200 and len(repr(refused.value)) < 220


# -- hostile files through the CLIs, in bounded memory and CPU -----------------------------


#: Runs the command under the limits and reports its exit code, stderr and rusage. A small
#: process of its own forks it: ``ru_maxrss`` survives fork and exec, so a child forked from
#: pytest itself would report pytest's own peak (hundreds of MB late in a session).
LAUNCHER = """
import json, os, resource, subprocess, sys
space, cpu = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (space, space))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
proc = subprocess.Popen(sys.argv[3:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = proc.stderr.read().decode()  # the CPU limit ends any loop; a FIFO open never blocks
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), err, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime]))
"""


def run_limited(*argv: str, cwd: Path) -> tuple[int, str, int, float]:
    """``python -m hfai_runtime.cli ARGV`` under the limits: exit code, stderr, peak RSS in
    bytes and CPU seconds."""
    env = {**os.environ, "KUBECONFIG": str(cwd / "no-kubeconfig")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    command = [sys.executable, "-m", "hfai_runtime.cli", *argv]
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(ADDRESS_SPACE), str(CPU_SECONDS), *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    code, err, rss, cpu = json.loads(done.stdout)
    return code, err, rss, cpu


def _write(name: str, content: str | bytes):
    def make(path: Path) -> Path:
        target = path / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        return target

    return make


def _job_with(mutate) -> str:
    doc = json.loads(json.dumps(JOB))
    mutate(doc)
    return yaml.safe_dump(doc)


def _container(doc: dict) -> dict:
    return doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]


def _fifo(path: Path) -> Path:
    os.mkfifo(path / "job.yaml")
    return path / "job.yaml"


def _sparse_200mb(path: Path) -> Path:
    target = path / "job.yaml"
    with open(target, "wb") as f:
        f.truncate(200 << 20)
    return target


def _deep_flow(path: Path) -> Path:
    return _write("job.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")(path)


HOSTILE = {
    "alias-bomb": (_write("job.yaml", alias_bomb()), "with aliases expanded"),
    "fifo": (_fifo, "not a regular file"),
    "200MB": (_sparse_200mb, "209715200 bytes; a manifest is at most"),
    # libyaml stops at its own limit (1000) before the reader sees 64 levels; either says "nest".
    "5000-deep": (_deep_flow, "nest"),
    "duplicate-privileged": (
        _write(
            "job.yaml",
            yaml.safe_dump(JOB).replace(
                "    - command:",
                "    - securityContext: {privileged: false, privileged: true}\n      command:",
            ),
        ),
        "key 'privileged' is given twice",
    ),
    "huge-number": (_write("job.yaml", "a: " + "1" * 100_000 + "\n"), "a number of more than 400"),
}


@pytest.mark.parametrize("command", ["check", "run-local", "job submit"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifests_give_one_line_and_exit_2_in_bounded_memory_and_cpu(tmp_path, command, case):
    make, message = HOSTILE[case]
    manifest = make(tmp_path)
    code, err, rss, cpu = run_limited(*command.split(), str(manifest), cwd=tmp_path)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], (code, err[-2000:])
    assert str(manifest) in lines[0]
    assert rss < MAX_RSS_BYTES and cpu < MAX_CPU_SECONDS, (rss, cpu)


def test_a_quantity_of_1e999999999_is_one_problem_quickly(tmp_path):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        _job_with(lambda d: _container(d)["resources"]["limits"].update(memory="1e999999999"))
    )
    code, err, rss, cpu = run_limited("check", str(manifest), cwd=tmp_path)
    assert code == 1 and err == "", err  # problems go to stdout, one line each
    assert rss < MAX_RSS_BYTES and cpu < MAX_CPU_SECONDS, (rss, cpu)
    problems = check_manifest(read_manifest(manifest))
    assert [(p.field.rsplit(".", 2)[-2:], p.rule) for p in problems if p.rule == "range/quantity"] == [
        (["limits", "memory"], "range/quantity")
    ]


def test_a_valid_1ei_memory_is_read_and_checked(tmp_path):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        _job_with(
            lambda d: _container(d)["resources"].update(
                requests={"cpu": "1", "memory": "1Ei"}, limits={"cpu": "1", "memory": "1Ei"}
            )
        )
    )
    assert check_manifest(read_manifest(manifest)) == []


# -- hypothesis ----------------------------------------------------------------------------

# YAML's printable characters (JSON escapes the C0 controls itself; libyaml refuses C1 ones raw)
# without U+2028/U+2029, which YAML 1.1 reads as line breaks where JSON keeps them raw.
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn", "Cf", "Zl", "Zp")), max_size=20)
_keys = _text.filter(bool)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=30,
)
_documents = st.dictionaries(_keys, _values, min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(st.lists(_documents, min_size=1, max_size=3))
def test_json_documents_read_back_exactly(documents):
    # JSON is YAML; what the API server reads from a JSON body is the JSON itself.
    text = "\n---\n".join(json.dumps(doc, ensure_ascii=False) for doc in documents)
    assert list(parse_manifest(text).documents) == documents


@settings(max_examples=150, deadline=None)
@given(_keys, st.lists(_keys, min_size=1, max_size=6))
def test_a_repeated_key_is_always_named_with_its_line(key, others):
    quoted = lambda k: json.dumps(k, ensure_ascii=False)  # noqa: E731
    lines = [f"{quoted(key)}: 1"] + [f"{quoted(k)}: 2" for k in dict.fromkeys(others) if k != key]
    lines.append(f"{quoted(key)}: 3")
    with pytest.raises(ManifestError) as refused:
        parse_manifest("\n".join(lines), "m.yaml")
    line = str(refused.value)
    assert f"m.yaml: line {len(lines)}: key " in line and "(first on line 1)" in line
    assert len(line) < 200 + SHOWN_CHARS


_SUFFIXES = {
    "": 1,
    "m": Fraction(1, 1000),
    "k": 1000,
    "M": 10**6,
    "G": 10**9,
    "Ki": 1024,
    "Mi": 2**20,
    "Ei": 2**60,
}


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["", "+", "-"]),
    st.integers(min_value=0, max_value=10**9),
    st.one_of(st.none(), st.integers(min_value=0, max_value=999)),
    st.sampled_from(sorted(_SUFFIXES)),
)
def test_quantities_are_exact(sign, whole, fraction, suffix):
    text = f"{sign}{whole}" + (f".{fraction:03d}" if fraction is not None else "") + suffix
    expected = (Fraction(whole) + Fraction(fraction or 0, 1000)) * _SUFFIXES[suffix]
    expected = -expected if sign == "-" else expected
    assert parse_quantity(text) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=40)
    | st.from_regex(r"[+-]?[0-9]{0,5}(\.[0-9]{0,5})?([eE][+-]?[0-9]{1,12})?", fullmatch=True)
)
def test_any_text_is_a_quantity_or_one_quantity_error(text):
    try:
        value = parse_quantity(text)
    except QuantityError as error:
        assert "\n" not in str(error) and len(str(error)) < 200
    else:
        assert abs(value) <= MAX_MAGNITUDE


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1Ei", 2**60),
        ("500m", Fraction(1, 2)),
        ("1e-999999999", Fraction(1, 10**9)),  # rounded up to 1n, as the API server does
        ("0.5n", Fraction(1, 10**9)),
        (2, 2),
        (0.25, Fraction(1, 4)),
    ],
)
def test_quantity_edges(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["1e999999999", "1e31", "9" * 40, "9" * 40 + "Ei", 10**40])
def test_quantities_beyond_any_resource_are_refused_without_computing_them(text):
    with pytest.raises(QuantityTooLarge, match="larger than 10\\^30"):
        parse_quantity(text)


@pytest.mark.parametrize("value", [True, None, "abc", "1.2.3", "Ki", "", "1 Gi", float("nan"), [1]])
def test_what_is_not_a_quantity(value):
    with pytest.raises(QuantityError):
        parse_quantity(value)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_any_name_is_judged_in_one_line_per_problem(name):
    """Whatever ``metadata.name`` a manifest holds, check judges it: no exception, each problem
    one line, and a name problem exactly when the name is not a DNS-1035 label."""
    from hfai_runtime.check.names import dns1035_label_error

    doc = json.loads(json.dumps(JOB))
    doc["metadata"]["name"] = name
    problems = check_manifest(Manifest("m.yaml", (doc,)))
    assert all("\n" not in str(p) and "\r" not in str(p) for p in problems)
    named = [p for p in problems if p.field == "metadata.name"]
    assert bool(named) == (dns1035_label_error(name) is not None), (name, named)
