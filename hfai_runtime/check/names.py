"""apimachinery's formats for names, label keys and values, and domain-prefixed paths.

``pkg/util/validation/validation.go`` and ``pkg/api/validate/content/kube.go``@v0.36.2 (the
apimachinery Trainer v2.3.0 builds with). Each function returns why a value is refused, or
``None`` when it is accepted. Patterns are matched whole (``fullmatch``): Go's regexp ``$`` does
not match before a trailing newline, Python's does.
"""

from __future__ import annotations

import re

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL)
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_HTTP_PATH = re.compile(r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
#: apimachinery pkg/util/validation/validation.go@v0.31.0 ``envVarNameFmt`` (Kubernetes 1.31;
#: from 1.32 the RelaxedEnvironmentVariableValidation gate allows any printable ASCII but '=').
_ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def dns1123_label_error(value: str) -> str | None:
    """``IsDNS1123Label``: at most 63 lower-case alphanumerics or '-', alphanumeric at both ends."""
    if len(value) <= 63 and _DNS1123_LABEL_RE.fullmatch(value):
        return None
    return (
        "must be a DNS-1123 label: at most 63 lower-case letters, digits or '-', starting and "
        "ending with a letter or digit"
    )


def env_var_name_error(value: str) -> str | None:
    """``IsEnvVarName``: letters, digits, '_', '-' or '.', not starting with a digit (no '=')."""
    if _ENV_VAR_NAME.fullmatch(value):
        return None
    return (
        "a valid environment variable name must consist of alphabetic characters, digits, '_', "
        "'-', or '.', and must not start with a digit"
    )


def dns1035_label_error(value: str) -> str | None:
    """``IsDNS1035Label``: at most 63 lower-case alphanumerics or '-', a letter first."""
    if len(value) <= 63 and _DNS1035_LABEL.fullmatch(value):
        return None
    return (
        "must be a DNS-1035 label: at most 63 lower-case letters, digits or '-', starting "
        "with a letter and ending with a letter or digit"
    )


def dns1123_subdomain_error(value: str) -> str | None:
    """``IsDNS1123Subdomain``: at most 253 characters of dot-separated DNS-1123 labels."""
    if len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value):
        return None
    return f"{value!r} must be a lowercase RFC 1123 subdomain (such as example.com)"


def domain_prefixed_path_error(value: str) -> str | None:
    """``IsDomainPrefixedPath``: a DNS subdomain, '/', then HTTP path characters (acme.io/foo)."""
    host, slash, path = value.partition("/")
    if not value:
        return "Required value"
    if not slash or not host or not path:
        return 'must be a domain-prefixed path (such as "acme.io/foo")'
    error = dns1123_subdomain_error(host)
    if error:
        return f"the part before the first '/': {error}"
    if not _HTTP_PATH.fullmatch(path):
        return f"{path!r} after the first '/' has characters not allowed in an HTTP path"
    return None


def label_key_error(key: str) -> str | None:
    """``IsLabelKey``: an optional DNS subdomain prefix and '/', then a name of at most 63."""
    prefix, slash, name = key.rpartition("/")
    if key.count("/") > 1:
        return "a label key has at most one '/'"
    if slash:
        error = "is empty" if not prefix else dns1123_subdomain_error(prefix)
        if error:
            return f"prefix part {error}"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return (
            "name part must be at most 63 alphanumerics, '-', '_' or '.', starting and "
            "ending with an alphanumeric"
        )
    return None


def label_value_error(value: str) -> str | None:
    """``IsLabelValue``: empty, or at most 63 alphanumerics, '-', '_' or '.', alphanumeric ends."""
    if value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value)):
        return None
    return (
        "must be empty or at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    )
