"""Connecting to the API server, and turning its refusals into one-line errors.

Every call the ``job`` commands make goes through :meth:`Cluster.call`, which maps the API
server's answers to a :class:`ClusterError` whose message names what was refused and why:
401/403 (the server's own ``Status`` message names the user and the verb), a 404 whose body is
a ``Status`` with ``reason: NotFound`` (the object does not exist) and a 404 without one (the
resource itself is not served: its CRD is not installed; the API server's fall-through handler
answers ``404 page not found`` in plain text, k8s.io/apiserver pkg/server/mux/pathrecorder.go
``http.NotFound``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: The name server-side apply records as the owner of the fields ``job submit`` sets.
FIELD_MANAGER = "hfai-runtime"
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: How long one request may take, connecting included (kubectl's ``--request-timeout``; it has
#: none by default, and a server that accepts a connection and never answers hangs it).
REQUEST_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
#: No answer the commands read is near this (a pod list of a big job is a few MiB).
MAX_BODY_BYTES = 256 << 20


class ClusterError(Exception):
    """A refusal or failure the user can act on; its message is one line."""


class NotFound(ClusterError):
    """The object does not exist (its resource type does)."""


class ResourceMissing(ClusterError):
    """The resource type is not served: its CRD is not installed."""


@dataclass
class Cluster:
    """A configured API client, the namespace the commands work in, and how long any one
    request may take (``--request-timeout``)."""

    api_client: Any  # kubernetes.client.ApiClient
    namespace: str
    timeout: float = REQUEST_TIMEOUT_SECONDS

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, with the API server's refusals raised as ClusterError.

        ``what`` says what was asked in the user's terms (``get PyTorchJob demo``). Every call
        gets connect and read timeouts (:meth:`timeouts`) unless it passes its own
        ``_request_timeout`` (a followed log, whose stream may be quiet for long).
        """
        kwargs.setdefault("_request_timeout", self.timeouts())
        with self.errors(what):
            return fn(*args, **kwargs)

    def json(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The JSON body of ``fn``'s response, read without the client's model deserialisation
        (the commands use the API server's JSON as it is), within the same timeouts."""
        return json.loads(self.body(what, fn, *args, **kwargs))

    def body(
        self, what: str, fn: Callable[..., Any], *args: Any, limit: int = MAX_BODY_BYTES, **kwargs: Any
    ) -> bytes:
        """The raw body of ``fn``'s response, at most ``limit`` bytes (a ClusterError beyond):
        the one place a response body is read, so its read is timed out and its errors mapped
        like the request's."""
        response = self.call(what, fn, *args, _preload_content=False, **kwargs)
        with self.errors(what):
            try:
                data = response.read(limit + 1)
            finally:
                response.release_conn()
        if len(data) > limit:
            raise ClusterError(f"{what}: the answer is larger than {limit} bytes")
        return data

    def timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds for one request."""
        return (min(CONNECT_TIMEOUT_SECONDS, self.timeout), self.timeout)

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Maps what the client raises to one-line ClusterErrors: the API server's refusals,
        no answer within the timeout, no connection."""
        # The kubernetes client is an optional dependency ([cluster]): imported where used.
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError, NewConnectionError
        from urllib3.exceptions import TimeoutError as Timeout

        host = self.api_client.configuration.host
        try:
            yield
        except ApiException as exc:
            raise _api_error(what, exc) from None
        except HTTPError as exc:
            # A timeout comes bare from a body read, wrapped in MaxRetryError from a request;
            # urllib3's NewConnectionError (refused, no route) subclasses its ConnectTimeoutError.
            cause = getattr(exc, "reason", None) or exc
            if isinstance(cause, Timeout) and not isinstance(cause, NewConnectionError):
                raise ClusterError(
                    f"{what}: the API server at {host} did not answer within {self.timeout:g} s "
                    "(--request-timeout)"
                ) from None
            raise ClusterError(
                f"{what}: cannot reach the API server at {host}: {_one_line(str(exc))}"
            ) from None

    def custom(self):
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def core(self):
        from kubernetes import client

        return client.CoreV1Api(self.api_client)


def connect(
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> Cluster:
    """A :class:`Cluster` from ``kubeconfig`` (else ``$KUBECONFIG``, else ``~/.kube/config``),
    or from the pod's service account when none exists and this runs inside a cluster.

    The namespace is ``namespace``, else the context's, else the service account's, else
    ``default`` (kubectl's order).
    """
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise ClusterError(
            "the kubernetes client is not installed: pip install 'hfai-runtime[cluster]'"
        ) from None

    configuration = client.Configuration()
    files = _kubeconfig_files(kubeconfig)
    try:
        if files:
            # Several files (a $KUBECONFIG list) are merged, as kubectl does.
            path = os.pathsep.join(files)
            config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration, persist_config=False
            )
            namespace = namespace or _context_namespace(path, context)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
            namespace = namespace or _incluster_namespace()
        else:
            raise ClusterError(
                "no kubeconfig: none at $KUBECONFIG or ~/.kube/config and not "
                "running in a pod; pass --kubeconfig FILE"
            )
    except ConfigException as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise ClusterError(f"kubeconfig {where}: {_one_line(str(exc))}") from None
    configuration.retries = 0  # a wrong address fails at once, not after urllib3's retries
    return Cluster(client.ApiClient(configuration), namespace or "default", timeout)


def _kubeconfig_files(explicit: str | None) -> list[str]:
    """The kubeconfig files that exist, in the order the client reads them."""
    if explicit:
        if not Path(explicit).is_file():
            raise ClusterError(f"no kubeconfig: --kubeconfig {explicit} does not exist")
        return [explicit]
    listed = os.environ.get("KUBECONFIG")
    candidates = listed.split(os.pathsep) if listed else [str(Path.home() / ".kube" / "config")]
    found = (Path(path).expanduser() for path in candidates if path)
    return [str(path) for path in found if path.is_file()]


def _context_namespace(config_file: str, context: str | None) -> str | None:
    from kubernetes import config

    contexts, active = config.list_kube_config_contexts(config_file)
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace")


def _incluster_namespace() -> str | None:
    try:
        return IN_CLUSTER_NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def _api_error(what: str, exc: Any) -> ClusterError:
    status = _status_body(exc.body)
    message = _one_line(status.get("message") or exc.reason or "")
    if exc.status == 404:
        if status.get("reason") == "NotFound" and (status.get("details") or {}).get("name"):
            return NotFound(f"{what}: not found ({message})")
        return ResourceMissing(
            f"{what}: the resource is not served by this cluster "
            f"(404 {_one_line(exc.body or '') or exc.reason}); is its CRD "
            f"installed?"
        )
    if exc.status == 403:
        return ClusterError(f"{what}: forbidden (403): {message}")
    if exc.status == 401:
        return ClusterError(f"{what}: unauthorized (401): the kubeconfig's credentials were refused")
    return ClusterError(f"{what}: the API server answered {exc.status}: {message}")


def _status_body(body: Any) -> dict:
    """The ``metav1.Status`` in an error response, or ``{}`` when the body is not one."""
    try:
        data = json.loads(body) if isinstance(body, (str, bytes)) else None
    except ValueError:
        return {}
    return data if isinstance(data, dict) and data.get("kind") == "Status" else {}


MESSAGE_CHARS = 300  # an answer from a proxy may be a whole HTML page


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 3] + "..."
