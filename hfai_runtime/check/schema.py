"""The CRDs' structural OpenAPI schemas, applied as the API server applies them on create.

Three parts: the schema itself (``jsonschema``: types, required, enums, patterns, bounds), unknown
fields refused, and list uniqueness (``x-kubernetes-list-type: map|set``).

Unknown fields: the API server silently prunes fields a structural schema does not define, but
``kubectl apply``'s default ``--validate=strict`` (server-side field validation ``Strict``,
kubectl >= 1.27) turns each one into an error. A typo such as ``terminationGracePeriod`` or a
field the CRD leaves out on purpose (``restartPolicy`` in a TrainJob's pod patch) is refused.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from importlib import resources
from typing import Any

import jsonschema
import yaml

from hfai_runtime.check.names import label_key_error, label_value_error
from hfai_runtime.check.problem import Problem, as_dict, child

#: The shipped CRD files (see ``crds/SOURCES.md``).
CRD_FILES = (
    "kubeflow.org_pytorchjobs.yaml",
    "trainer.kubeflow.org_trainjobs.yaml",
    "trainer.kubeflow.org_clustertrainingruntimes.yaml",
    "trainer.kubeflow.org_trainingruntimes.yaml",
)

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """``{(apiVersion, kind): openAPIV3Schema}`` for every served version of the shipped CRDs."""
    schemas = {}
    for name in CRD_FILES:
        text = resources.files(__package__).joinpath("crds", name).read_text()
        crd = yaml.load(text, Loader=_LOADER)  # 25k lines of YAML: libyaml, 10x faster
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def schema_for(api_version: str, kind: str) -> dict | None:
    """The schema a custom resource of this apiVersion and kind is validated against, if known;
    for ``batch/v1`` Job, :func:`batch_job_schema`."""
    if (api_version, kind) == ("batch/v1", "Job"):
        return batch_job_schema()
    return crd_schemas().get((api_version, kind))


@functools.cache
def batch_job_schema() -> dict:
    """A ``batch/v1`` Job's schema, for strict decoding (unknown fields, types) of its spec.

    No CRD describes core kinds, but JobSet embeds the batch ``JobSpec`` in its replicated Jobs,
    and the TrainingRuntime CRD (trainer v2.3.0) carries it as controller-gen generated it from
    k8s.io/api batch/v1: that is the Job's ``spec``. The embedded pod template's metadata lists
    only some ObjectMeta fields, so the others are let through there.
    """
    runtime = crd_schemas()[("trainer.kubeflow.org/v1alpha1", "TrainingRuntime")]
    job = runtime["properties"]["spec"]["properties"]["template"]["properties"]["spec"]
    spec = copy.deepcopy(
        job["properties"]["replicatedJobs"]["items"]["properties"]["template"]["properties"]["spec"]
    )
    spec["properties"]["template"]["properties"]["metadata"]["x-kubernetes-preserve-unknown-fields"] = True
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }


def check_schema(doc: dict, schema: dict) -> list[Problem]:
    """Everything the API server's schema validation refuses in ``doc``."""
    problems = [
        problem
        for error in jsonschema.Draft7Validator(schema).iter_errors(doc)
        for problem in _problem(error)
    ]
    problems += _object_meta(doc.get("metadata"))
    for value, node, path in walk(doc, schema):
        problems += _unknown_fields(value, node, path)
        problems += _duplicates(value, node, path)
    return problems


def blocks_rules(problems: list[Problem]) -> bool:
    """Whether the API server skips the CEL rules: after a wrong type, a missing required field,
    an unsupported enum value or a too long string or list, it reports "some validation rules
    were not checked because the object was invalid" instead (apiextensions-apiserver
    ``pkg/registry/customresource/strategy.go`` ``hasBlockingErr``@v0.36.2)."""
    return any(p.rule in _BLOCKING for p in problems)


_BLOCKING = {f"schema/{name}" for name in ("type", "anyOf", "required", "enum", "maxLength", "maxItems")}


def walk(value: Any, schema: dict, path: str = "") -> Iterator[tuple[Any, dict, str]]:
    """Every ``(value, schema, path)`` of ``value`` that the structural ``schema`` describes."""
    yield value, schema, path
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                yield from walk(item, properties[key], child(path, key))
            elif isinstance(additional, dict):
                yield from walk(item, additional, child(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from walk(item, schema["items"], child(path, i))


def _problem(error: jsonschema.ValidationError) -> list[Problem]:
    """One error of ``jsonschema`` in the words and field paths of the API server."""
    path = ""
    for key in error.absolute_path:
        path = child(path, key)
    if error.validator == "required":
        return [
            Problem(child(path, name), "Required value", "schema/required")
            for name in error.validator_value
            if name not in error.instance
        ]
    if error.validator == "type":
        message = f"Invalid value: must be of type {error.validator_value}"
    else:
        message = _shorten(error.message)
    return [Problem(path, message, f"schema/{error.validator}")]


def _object_meta(meta: Any) -> list[Problem]:
    """The API server's ObjectMeta rules, which a CRD schema leaves out (``metadata: object``).

    apimachinery ``pkg/api/validation/objectmeta.go`` ``ValidateObjectMetaAccessor`` and
    ``pkg/apis/meta/v1/validation/validation.go`` ``ValidateLabels``@v0.36.2: a name (or
    generateName); label keys and values in their formats; label and annotation values strings.
    """
    meta = as_dict(meta)
    problems = []
    if not (meta.get("name") or meta.get("generateName")):
        problems.append(
            Problem("metadata.name", "Required value: name or generateName is required", "schema/required")
        )
    for kind in ("labels", "annotations"):
        for key, value in as_dict(meta.get(kind)).items():
            where = child(f"metadata.{kind}", key)
            if not isinstance(value, str):
                problems.append(
                    Problem(where, f"Invalid value: {value!r}: must be a string (quote it)", "schema/type")
                )
            elif kind == "labels":
                key_error, value_error = label_key_error(str(key)), label_value_error(value)
                if key_error or value_error:
                    bad = repr(key) if key_error else repr(value)
                    problems.append(
                        Problem(where, f"Invalid value: {bad}: {key_error or value_error}", "apiserver/label")
                    )
    return problems


def _unknown_fields(value: Any, schema: dict, path: str) -> list[Problem]:
    """Keys of a mapping that its structural schema does not define (pruned, or refused)."""
    if (
        not isinstance(value, dict)
        or "properties" not in schema
        or schema.get("x-kubernetes-preserve-unknown-fields")
        or isinstance(schema.get("additionalProperties"), dict)
    ):
        return []
    allowed = ", ".join(sorted(schema["properties"]))
    return [
        Problem(child(path, key), f"unknown field (allowed here: {allowed})", "schema/unknown-field")
        for key in value
        if key not in schema["properties"]
    ]


def _duplicates(value: Any, schema: dict, path: str) -> list[Problem]:
    """Items that repeat a key of an ``x-kubernetes-list-type: map`` (or a ``set``) list."""
    list_type = schema.get("x-kubernetes-list-type")
    if not isinstance(value, list) or list_type not in ("map", "set"):
        return []
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen: list[Any] = []
    problems = []
    for i, item in enumerate(value):
        key = [item.get(k) for k in keys] if list_type == "map" and isinstance(item, dict) else item
        if key in seen:
            problems.append(
                Problem(child(path, i), f"Duplicate value: {_shorten(repr(key))}", "schema/duplicate")
            )
        seen.append(key)
    return problems


def _shorten(text: str, limit: int = 160) -> str:
    """One readable line: a problem names the field, it does not dump the whole value."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
