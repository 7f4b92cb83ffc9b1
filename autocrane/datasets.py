"""What makes a data-set declaration valid: ``data.autocrane.io/<name>: <source>`` (pure).

Three readers, one rule, so what one accepts the others accept:

- the **webhook** denies a pod whose declaration is not valid, naming the key and the form;
- the **datadeployer** refuses such a declaration (a bad name is never used as a path, a bad
  source is reported on that data set's ``/status``);
- the **controller** leaves it out of data rollouts, and says why once.

A valid declaration has a ``<name>`` that is a DNS-1123 label (lower-case letters, digits and
``-``, at most 63 characters: the data set appears at ``<store location>/<name>``, so it must be
a safe path component) and a ``<source>`` that is a data-repository source name
(``autocrane.manifests.check_source``: names of ``[a-z0-9-_.]`` joined by ``/``, like
``models/resnet``). Surrounding whitespace in the source is ignored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from autocrane import errors, keys, manifests

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # fullmatch: "$" would accept "models\n"
NAME_FORM = ("a key data.autocrane.io/<name> whose name is a DNS-1123 label (lowercase letters, digits and '-', "
             "at most 63 characters), like data.autocrane.io/models")
SOURCE_FORM = "a data-repository source: names of [a-z0-9-_.] joined by '/', like models/resnet"


@dataclasses.dataclass(frozen=True, slots=True)
class DataSet:
    """One valid ``data.autocrane.io/<name>: <source>`` declaration."""

    name: str
    """DNS-1123 label; the data set appears at ``<store location>/<name>``."""
    source: str
    """The repository source it comes from (stripped of surrounding whitespace)."""

    @property
    def key(self) -> str:
        return keys.DATA_PREFIX + self.name


def is_dns1123_label(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS1123_LABEL.fullmatch(name))


def name_of(key: str, value: object) -> str:
    """The data-set name of a ``data.autocrane.io/<name>`` key; AnnotationError naming it if it is no name."""
    name = key.removeprefix(keys.DATA_PREFIX)
    if not key.startswith(keys.DATA_PREFIX) or not is_dns1123_label(name):
        raise errors.AnnotationError(key, value, NAME_FORM)
    return name


def parse(key: str, value: object) -> DataSet:
    """The declaration ``key: value``; AnnotationError naming the key and the expected form otherwise."""
    name = name_of(key, value)
    if not isinstance(value, str) or not value.strip():
        raise errors.AnnotationError(key, value, "a non-empty data-repository source, like models/resnet")
    source = value.strip()
    try:
        manifests.check_source(source)
    except manifests.ManifestError:
        raise errors.AnnotationError(key, value, SOURCE_FORM) from None
    return DataSet(name, source)


def declared(annotations: Mapping[str, str]) -> tuple[dict[str, DataSet], dict[str, errors.AnnotationError]]:
    """Every valid declaration by name, and every invalid one by key (sorted by key)."""
    found: dict[str, DataSet] = {}
    invalid: dict[str, errors.AnnotationError] = {}
    for key, value in sorted(annotations.items()):
        if key.startswith(keys.DATA_PREFIX):
            try:
                data_set = parse(key, value)
            except errors.AnnotationError as error:
                invalid[key] = error
                continue
            found[data_set.name] = data_set
    return found, invalid
