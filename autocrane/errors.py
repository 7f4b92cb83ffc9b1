"""AutoCrane's exceptions: one base class, and errors that name what was wrong and what was expected.

Every error AutoCrane raises on purpose derives from :class:`AutocraneError`; anything else that
escapes is a bug. Callers tell errors apart by their type, never by a status code or the words of
a message: the API server's answers, for instance, become the :class:`KubeError` subclasses
below (``autocrane.kube`` decides which from the answer's Status body).

Every message is written for the person who wrote the YAML: it names the key (annotation or setting),
quotes the value and says which form would be accepted. The webhook turns ``AnnotationError`` into an
admission denial with exactly this text, and ``autocrane inject`` prints the same text. Keys and
values are quoted through ``autocrane.untrusted`` (cut to a few dozen characters), so a 1 MiB value
makes a message of a few hundred bytes, never a 1 MiB denial.

Hierarchy::

    AutocraneError
    ├── ConfigError            a setting (flag, file key, environment variable)
    ├── AnnotationError        a pod's *.autocrane.io annotation
    ├── ObjectError            an object not shaped like its kind
    ├── UntrustedValueError    an outside value that cannot be decoded (also a ValueError)
    └── KubeError              an API call that failed (status, reason, retry_after, body)
        ├── NotFound (404), Conflict (409), AlreadyExists (409 AlreadyExists), Gone (410),
        ├── Invalid (422), Unauthorized (401), Forbidden (403), TooManyRequests (429),
        ├── ServerError (5xx) └── MultiplePodDisruptionBudgets (the Eviction API's 500)
        └── NoAnswer           no HTTP answer at all (unreachable, TLS, timeout)

Each program's own errors (``ManifestError``, ``CertError``, ``ArchiveError``...) derive from
one of these, mostly from ``AutocraneError`` directly.
"""

from __future__ import annotations

from typing import Any


class AutocraneError(Exception):
    """Base class of the errors AutoCrane raises on purpose (everything else is a bug)."""


class AnnotationError(AutocraneError):
    """A pod's ``*.autocrane.io`` annotation cannot be honoured: malformed, or in conflict with the pod."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        super().__init__(key, value, expected)
        self.key = key
        """The annotation key, e.g. ``store.autocrane.io/location``."""
        self.value = value
        """The value as found (or the default in force when the annotation was absent)."""
        self.expected = expected
        """What would have been accepted, e.g. ``an absolute path like /data``."""

    def __str__(self) -> str:
        return f"annotation {_quote(self.key, KEY_SHOWN)}: {_quote(self.value)} is not valid: expected {self.expected}"


class ObjectError(AutocraneError):
    """An object is not shaped like the Kubernetes kind it claims to be (e.g. ``spec.containers`` not a list)."""

    def __init__(self, path: str, expected: str) -> None:
        super().__init__(path, expected)
        self.path = path
        """Dotted path of the offending field, e.g. ``spec.containers[1].volumeMounts``."""
        self.expected = expected
        """What would have been accepted."""

    def __str__(self) -> str:
        return f"{self.path} is not valid: expected {self.expected}"


class ConfigError(AutocraneError):
    """A setting (config file key, flag or environment variable) is unknown or malformed."""


class UntrustedValueError(AutocraneError, ValueError):
    """An outside value cannot be decoded; the message names it and says what was expected.

    Raised by :mod:`autocrane.untrusted` (which re-exports it under the same name).
    """


# --- the API server's answers ------------------------------------------------------------------


class KubeError(AutocraneError):
    """An API call failed. The subclass says how; the attributes say what the API server answered."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "", retry_after: float | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status (0: there was no answer)."""
        self.reason = reason
        """The Status body's ``reason`` (``NotFound``, ``AlreadyExists``...), empty when it had none."""
        self.retry_after = retry_after
        """Seconds the API server asked us to wait (``Retry-After``), if it did."""
        self.body = body or {}
        """The Status body as decoded (``message``, ``details``...), empty when there was none."""

    @property
    def message(self) -> str:
        """The Status body's ``message``: the API server's own words, for an Event or a log line."""
        return str(self.body.get("message") or self)


class NotFound(KubeError):
    """404: the object (or its namespace, or its kind) does not exist."""


class Conflict(KubeError):
    """409: the object changed since it was read (a stale ``metadata.resourceVersion``)."""


class AlreadyExists(KubeError):
    """409 with reason AlreadyExists: a create lost a race; read the winner."""


class Gone(KubeError):
    """410: the resourceVersion is too old (a watch's history was compacted): LIST again."""


class Invalid(KubeError):
    """422: the object or patch was refused (also a JSON patch whose ``test`` failed)."""


class Unauthorized(KubeError):
    """401: the credentials were not accepted."""


class Forbidden(KubeError):
    """403: RBAC (or an admission plugin, or a PodDisruptionBudget's state) refuses the call."""


class TooManyRequests(KubeError):
    """429: try again later (``retry_after`` when the server said when); for an eviction, the PDB refuses it now."""


class ServerError(KubeError):
    """5xx: the API server (or something behind it) failed."""


class MultiplePodDisruptionBudgets(ServerError):
    """The Eviction API's 500 for a pod that more than one PodDisruptionBudget selects: it evicts none."""


class NoAnswer(KubeError):
    """No HTTP answer: unreachable, TLS failure, timeout, or a connection broken mid-answer."""


KEY_SHOWN = 317
"""Characters of a key quoted in a message: the longest valid annotation key (a 253-character
prefix, '/', a 63-character name); a longer one is cut."""


def _quote(value: object, limit: int | None = None) -> str:
    from autocrane import untrusted  # here, not above: untrusted imports this module

    if isinstance(value, str):
        return untrusted.quoted(value, limit or untrusted.SHOWN)
    return f"{untrusted.shown(value)} ({type(value).__name__})"
