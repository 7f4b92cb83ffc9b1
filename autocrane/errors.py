"""AutoCrane's exceptions: one base class, and errors that name what was wrong and what was expected.

Every message is written for the person who wrote the YAML: it names the key (annotation or setting),
quotes the value and says which form would be accepted. The webhook turns ``AnnotationError`` into an
admission denial with exactly this text, and ``autocrane inject`` prints the same text. Keys and
values are quoted through ``autocrane.untrusted`` (cut to a few dozen characters), so a 1 MiB value
makes a message of a few hundred bytes, never a 1 MiB denial.
"""

from __future__ import annotations


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


KEY_SHOWN = 317
"""Characters of a key quoted in a message: the longest valid annotation key (a 253-character
prefix, '/', a 63-character name); a longer one is cut."""


def _quote(value: object, limit: int | None = None) -> str:
    from autocrane import untrusted  # here, not above: untrusted's errors derive from AutocraneError

    if isinstance(value, str):
        return untrusted.quoted(value, limit or untrusted.SHOWN)
    return f"{untrusted.shown(value)} ({type(value).__name__})"
