"""An in-process fake of the few Kubernetes API endpoints ``hfai-runtime job`` calls.

No API server can run where these tests run, so this one serves, over real HTTP on 127.0.0.1
(the official client talks to it through its own kubeconfig loading, urllib3 and
deserialisation), exactly what the commands use:

* custom objects: get, list, merge-patch and server-side apply (``application/apply-patch``,
  which requires ``fieldManager``) for the CRDs it is told are installed; any other resource
  path answers like an API server without that CRD: ``404 page not found`` in plain text;
* core v1: pods (list, with ``labelSelector``), a pod's log (``container``, ``previous``,
  ``timestamps``, ``tailLines``, ``limitBytes``, ``follow``) and events (list, with
  ``fieldSelector`` equalities).

:class:`SilentAPI` is a server that accepts connections and never answers (or answers the
headers and never the body): what a client without timeouts hangs on.

Responses are built from the client's own models (``V1Pod``, ``CoreV1Event``, ``V1Status``...)
serialised with ``ApiClient().sanitize_for_serialization``, so they have the real types' shapes;
errors are ``metav1.Status`` objects with the reason and message a real server gives.

A :class:`Frame` is the cluster's state at one moment; the fake moves to the next frame each
time a job object is read again, which replays a recorded sequence to a command that polls.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from kubernetes import client

TOKEN = "fake-token"
JOB_PLURALS = ("pytorchjobs", "trainjobs")
CUSTOM = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/"
    r"(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/log$")
EVENTS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/events$")

_UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def _serialise(model: Any) -> Any:
    """The model as the API server's JSON: the client's own serialisation, with times in UTC
    written ``...Z`` as Go's RFC 3339 formatting does."""
    return _zulu(client.ApiClient().sanitize_for_serialization(model))


def _zulu(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _zulu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_zulu(v) for v in value]
    if isinstance(value, str) and _UTC_TIME.match(value):
        return value[:-6] + "Z"
    return value


@dataclass
class LogLine:
    time: str  # RFC 3339, as the kubelet stamps it
    text: str


@dataclass
class Frame:
    """The cluster at one moment: custom objects, pods, pod logs and events."""

    # (group, plural, namespace, name) -> the object
    objects: dict[tuple[str, str, str, str], dict] = field(default_factory=dict)
    pods: list[dict] = field(default_factory=list)
    logs: dict[str, list[LogLine]] = field(default_factory=dict)  # pod uid -> current container
    previous_logs: dict[str, list[LogLine]] = field(default_factory=dict)  # pod uid -> previous
    events: list[dict] = field(default_factory=list)

    def add(self, obj: dict) -> dict:
        group = obj["apiVersion"].split("/")[0]
        meta = obj["metadata"]
        self.objects[(group, _plural(obj["kind"]), meta["namespace"], meta["name"])] = obj
        return obj


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


class FakeKubeAPI:
    """Serve ``frames`` (one or a recorded sequence) until :meth:`stop`."""

    def __init__(
        self,
        frames: list[Frame] | Frame,
        installed: tuple[tuple[str, str, str], ...] = (
            ("kubeflow.org", "v1", "pytorchjobs"),
            ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
            ("trainer.kubeflow.org", "v1alpha1", "trainingruntimes"),
            ("kueue.x-k8s.io", "v1beta1", "workloads"),
        ),
    ):
        self.frames = frames if isinstance(frames, list) else [frames]
        self.index = 0
        self.installed = set(installed)
        self.forbidden = False  # answer every request 403, as RBAC would
        self.open_follows = False  # keep followed log streams open until the server stops
        self._stopping = threading.Event()
        self.requests: list[Request] = []
        self._job_reads = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    @property
    def frame(self) -> Frame:
        return self.frames[self.index]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, folder: Path, namespace: str = "team-a") -> Path:
        """A kubeconfig file pointing at this server, with ``namespace`` as the context's."""
        path = folder / "kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": TOKEN}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                        }
                    ],
                }
            )
        )
        return path

    def patches(self, plural: str) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH" and f"/{plural}/" in r.path]

    # -- HTTP ------------------------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                fake._serve(self, "GET")

            def do_PATCH(self) -> None:
                fake._serve(self, "PATCH")

        return Handler

    def _serve(self, http: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(http.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(http.headers.get("Content-Length") or 0)
        raw = http.rfile.read(length) if length else b""
        content_type = http.headers.get("Content-Type", "")
        with self._lock:
            self.requests.append(
                Request(method, parts.path, query, content_type, json.loads(raw) if raw else None)
            )
            if http.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, body = _status(401, "Unauthorized", "Unauthorized")
            elif self.forbidden:
                status, body = _status(
                    403,
                    "Forbidden",
                    f"{_resource(parts.path)} is forbidden: "
                    f'User "tester" cannot {method.lower()} resource '
                    f'"{_resource(parts.path)}" in the namespace "team-a"',
                )
            else:
                status, body = self._route(method, parts.path, query, content_type)
        _send(http, status, body)

    def _route(self, method: str, path: str, query: dict, content_type: str):
        if match := POD_LOG.match(path):
            return self._log(match["ns"], match["name"], query)
        if match := PODS.match(path):
            pods = [
                p
                for p in self.frame.pods
                if p["metadata"]["namespace"] == match["ns"] and _selected(p, query.get("labelSelector", ""))
            ]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}
        if match := EVENTS.match(path):
            events = [
                e
                for e in self.frame.events
                if e["metadata"]["namespace"] == match["ns"]
                and _fields_match(e, query.get("fieldSelector", ""))
            ]
            return 200, {"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": events}
        match = CUSTOM.match(path)
        if not match or (match["group"], match["version"], match["plural"]) not in self.installed:
            return 404, "404 page not found\n"
        return self._custom(method, match, query, content_type)

    def _custom(self, method: str, match: re.Match, query: dict, content_type: str):
        group, plural, ns, name = match["group"], match["plural"], match["ns"], match["name"]
        if name is None:
            items = [o for (g, p, n, _), o in self.frame.objects.items() if (g, p, n) == (group, plural, ns)]
            return 200, {
                "apiVersion": f"{group}/{match['version']}",
                "kind": "List",
                "metadata": {},
                "items": items,
            }
        if method == "GET" and plural in JOB_PLURALS:
            self._job_reads += 1
            if self._job_reads > 1 and self.index + 1 < len(self.frames):
                self.index += 1  # a poll: the recorded sequence moves on
        key = (group, plural, ns, name)
        found = self.frame.objects.get(key)
        body = self.requests[-1].body
        if method == "PATCH" and content_type.startswith("application/apply-patch"):
            if not query.get("fieldManager"):
                return _status(
                    400,
                    "BadRequest",
                    'PatchOptions.meta.k8s.io "" is invalid: '
                    "fieldManager: Required value: is required for apply patch",
                )
            applied = _merge(copy.deepcopy(found) if found else {}, body)
            applied["metadata"].setdefault("uid", str(uuid.uuid4()))
            applied["metadata"].setdefault("creationTimestamp", "2026-11-30T05:00:00Z")
            applied["metadata"]["managedFields"] = [{"manager": query["fieldManager"], "operation": "Apply"}]
            self.frame.objects[key] = applied
            return (200 if found else 201), applied
        if found is None:
            return _status(
                404,
                "NotFound",
                f'{plural}.{group} "{name}" not found',
                details={"name": name, "group": group, "kind": plural},
            )
        if method == "PATCH":
            if content_type != "application/merge-patch+json":
                return _status(415, "UnsupportedMediaType", f"unexpected {content_type}")
            self.frame.objects[key] = found = _merge(found, body)
        return 200, found

    def _log(self, ns: str, name: str, query: dict):
        pod = next(
            (
                p
                for p in self.frame.pods
                if p["metadata"]["name"] == name and p["metadata"]["namespace"] == ns
            ),
            None,
        )
        if pod is None:
            return _status(
                404, "NotFound", f'pods "{name}" not found', details={"name": name, "kind": "pods"}
            )
        container = query.get("container") or pod["spec"]["containers"][0]["name"]
        uid = pod["metadata"]["uid"]
        previous = query.get("previous") == "true"
        lines = (self.frame.previous_logs if previous else self.frame.logs).get(uid)
        if lines is None:
            what = (
                f'previous terminated container "{container}" in pod "{name}" not found'
                if previous
                else f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
            return _status(400, "BadRequest", what)
        stamped = query.get("timestamps") == "true"
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]) :] if int(query["tailLines"]) else []
        text = "".join(f"{line.time} {line.text}\n" if stamped else f"{line.text}\n" for line in lines)
        if "limitBytes" in query:  # the kubelet applies it after tailLines
            text = text.encode()[: int(query["limitBytes"])].decode(errors="ignore")
        if query.get("follow") == "true" and self.open_follows:
            return 200, _OpenStream(text, self._stopping)
        return 200, text


# -- objects shaped like the real ones ----------------------------------------------------


def pytorchjob(
    name: str,
    namespace: str = "team-a",
    *,
    uid: str = "job-uid",
    created: str = "2026-11-30T05:00:00Z",
    conditions: list[dict] | None = None,
    labels: dict | None = None,
    suspend: bool = False,
) -> dict:
    """A PyTorchJob as the API server returns it (kubeflow.org/v1, Training Operator v1.9.4)."""
    replica = {
        "replicas": 1,
        "restartPolicy": "ExitCode",
        "template": {"spec": {"containers": [{"name": "pytorch", "image": "registry.example/demo:1"}]}},
    }
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "creationTimestamp": created,
            "labels": labels or {},
        },
        "spec": {
            "runPolicy": {"suspend": suspend},
            "pytorchReplicaSpecs": {"Master": replica, "Worker": copy.deepcopy(replica)},
        },
        "status": {"conditions": conditions or []},
    }


def trainjob(
    name: str,
    namespace: str = "team-a",
    *,
    uid: str = "trainjob-uid",
    labels: dict | None = None,
    suspend: bool = False,
    conditions: list[dict] | None = None,
) -> dict:
    """A TrainJob as the API server returns it (trainer.kubeflow.org/v1alpha1, Trainer v2.3.0)."""
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "creationTimestamp": "2026-11-30T05:00:00Z",
            "labels": labels or {},
        },
        "spec": {"runtimeRef": {"name": "torch-distributed"}, "suspend": suspend, "trainer": {"numNodes": 2}},
        "status": {"conditions": conditions or []},
    }


def workload(
    name: str, owner: dict, *, active: bool = True, admitted_by: str | None = None, pending: str | None = None
) -> dict:
    """A Kueue Workload (kueue.x-k8s.io/v1beta1) owned by ``owner``."""
    conditions = []
    if admitted_by:
        conditions += [
            _condition(
                "QuotaReserved", "True", "QuotaReserved", f"Quota reserved in ClusterQueue {admitted_by}"
            ),
            _condition("Admitted", "True", "Admitted", "The workload is admitted"),
        ]
    elif pending:
        conditions.append(_condition("QuotaReserved", "False", "Pending", pending))
    meta = owner["metadata"]
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "Workload",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "uid": str(uuid.uuid4()),
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"active": active, "queueName": meta["labels"].get("kueue.x-k8s.io/queue-name", "")},
        "status": {
            "conditions": conditions,
            **({"admission": {"clusterQueue": admitted_by}} if admitted_by else {}),
        },
    }


def condition(ctype: str, status: str, reason: str, message: str, at: str) -> dict:
    """A job condition (kubeflow.org/v1 JobCondition)."""
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": at,
        "lastTransitionTime": at,
    }


def pod(job: str, replica_type: str, index: int, uid: str, phase: str, **status: Any) -> dict:
    """A PyTorchJob's pod, named and labelled as the Training Operator v1.9.4 does it
    (``status``: :func:`_pod`'s keywords)."""
    labels = {
        "training.kubeflow.org/job-name": job,
        "training.kubeflow.org/operator-name": "pytorchjob-controller",
        "training.kubeflow.org/replica-type": replica_type,
        "training.kubeflow.org/replica-index": str(index),
    }
    return _pod(f"{job}-{replica_type}-{index}", uid, labels, {}, "pytorch", phase, **status)


def trainjob_pod(job: str, index: int, suffix: str, uid: str, phase: str, **status: Any) -> dict:
    """A TrainJob's pod: JobSet ``<job>``, replicated job ``node``, an Indexed Job's pod
    ``<job>-node-0-<index>-<suffix>`` with the completion index label and annotation."""
    labels = {
        "jobset.sigs.k8s.io/jobset-name": job,
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "jobset.sigs.k8s.io/job-index": "0",
        "batch.kubernetes.io/job-completion-index": str(index),
    }
    annotations = {"batch.kubernetes.io/job-completion-index": str(index)}
    return _pod(f"{job}-node-0-{index}-{suffix}", uid, labels, annotations, "node", phase, **status)


def _pod(
    name: str,
    uid: str,
    labels: dict,
    annotations: dict,
    container: str,
    phase: str,
    *,
    created: str,
    namespace: str = "team-a",
    state: dict | None = None,
    last_state: dict | None = None,
    restarts: int = 0,
) -> dict:
    """The pod as the API server serves it; ``state``/``last_state`` are ``{"running": {...}}``,
    ``{"terminated": {...}}`` or ``{"waiting": {...}}`` with the client model's field names."""
    image = "registry.example/demo:1"
    status = client.V1ContainerStatus(
        name=container,
        image=image,
        image_id="",
        ready=phase == "Running",
        restart_count=restarts,
        state=_state(state),
        last_state=_state(last_state),
    )
    model = client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            uid=uid,
            creation_timestamp=created,
            labels=labels,
            annotations=annotations or None,
        ),
        spec=client.V1PodSpec(containers=[client.V1Container(name=container, image=image)]),
        status=client.V1PodStatus(phase=phase, container_statuses=[status]),
    )
    return _serialise(model)


def event(
    namespace: str,
    involved: dict,
    reason: str,
    message: str,
    first: str,
    last: str | None = None,
    count: int = 1,
    component: str = "pytorchjob-controller",
    event_type: str = "Normal",
) -> dict:
    """A core v1 Event about ``involved`` (a pod or job as served)."""
    meta = involved["metadata"]
    model = client.CoreV1Event(
        api_version="v1",
        kind="Event",
        metadata=client.V1ObjectMeta(
            name=f"{meta['name']}.{uuid.uuid4().hex[:16]}",
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creation_timestamp=first,
        ),
        involved_object=client.V1ObjectReference(
            api_version=involved["apiVersion"],
            kind=involved["kind"],
            name=meta["name"],
            namespace=namespace,
            uid=meta["uid"],
        ),
        reason=reason,
        message=message,
        type=event_type,
        count=count,
        first_timestamp=first,
        last_timestamp=last or first,
        source=client.V1EventSource(component=component),
    )
    return _serialise(model)


def _state(state: dict | None):
    if not state:
        return None
    ((phase, fields),) = state.items()
    if phase == "running":
        return client.V1ContainerState(running=client.V1ContainerStateRunning(**fields))
    if phase == "terminated":
        return client.V1ContainerState(terminated=client.V1ContainerStateTerminated(**fields))
    return client.V1ContainerState(waiting=client.V1ContainerStateWaiting(**fields))


def _condition(ctype: str, status: str, reason: str, message: str) -> dict:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-30T05:00:01Z",
        "observedGeneration": 1,
    }


def _plural(kind: str) -> str:
    return {
        "PyTorchJob": "pytorchjobs",
        "TrainJob": "trainjobs",
        "TrainingRuntime": "trainingruntimes",
        "Workload": "workloads",
    }[kind]


def _resource(path: str) -> str:
    match = CUSTOM.match(path)
    return f"{match['plural']}.{match['group']}" if match else "pods"


def _status(code: int, reason: str, message: str, details: dict | None = None):
    model = client.V1Status(
        api_version="v1",
        kind="Status",
        status="Failure",
        code=code,
        reason=reason,
        message=message,
        metadata=client.V1ListMeta(),
        details=client.V1StatusDetails(**details) if details else None,
    )
    return code, _serialise(model)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    target = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


def _selected(obj: dict, selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    pairs = (term.split("=", 1) for term in selector.split(",") if term)
    return all(labels.get(key) == value for key, value in pairs)


@dataclass
class _OpenStream:
    """A followed log whose stream stays open (the container still writing) until ``until``."""

    text: str
    until: threading.Event


def _fields_match(obj: dict, selector: str) -> bool:
    """A field selector of ``path=value`` equalities (``involvedObject.name=demo,reason=X``)."""
    for term in filter(None, selector.split(",")):
        path, _, expected = term.partition("=")
        value: Any = obj
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if str(value) != expected:
            return False
    return True


class SilentAPI:
    """A TCP server on 127.0.0.1 that accepts every connection and reads the request, then
    never answers (``headers=False``) or answers ``200`` headers for a JSON body it never sends
    (``headers=True``), until :meth:`stop`. ``kubeconfig`` points a client at it."""

    def __init__(self, headers: bool = False):
        import socket

        self.headers = headers
        self.accepted = 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._held: list = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self._socket.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except OSError:
                continue
            self.accepted += 1
            self._held.append(conn)
            conn.settimeout(1.0)
            try:
                conn.recv(65536)
                if self.headers:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
                    )
            except OSError:
                pass

    def __enter__(self) -> SilentAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self._socket.close()

    def kubeconfig(self, folder: Path) -> Path:
        port = self._socket.getsockname()[1]
        path = folder / "kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "silent",
            "clusters": [{"name": "silent", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "tester", "user": {"token": TOKEN}}],
            "contexts": [
                {"name": "silent", "context": {"cluster": "silent", "user": "tester", "namespace": "team-a"}}
            ],
        }
        path.write_text(yaml.safe_dump(config))
        return path


def _send(http: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    if isinstance(body, _OpenStream):
        # Chunked, as the API server streams a followed log: each chunk reaches the client now.
        data = body.text.encode()
        http.send_response(status)
        http.send_header("Content-Type", "text/plain; charset=utf-8")
        http.send_header("Transfer-Encoding", "chunked")
        http.end_headers()
        http.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        http.wfile.flush()
        body.until.wait()
        http.wfile.write(b"0\r\n\r\n")
        http.close_connection = True
        return
    if isinstance(body, str):
        data, ctype = body.encode(), "text/plain; charset=utf-8"
    else:
        data, ctype = json.dumps(body).encode(), "application/json"
    http.send_response(status)
    http.send_header("Content-Type", ctype)
    http.send_header("Content-Length", str(len(data)))
    http.end_headers()
    http.wfile.write(data)
