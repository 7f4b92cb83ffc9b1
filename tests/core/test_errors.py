"""One error hierarchy: every exception class the product defines derives from AutocraneError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from autocrane import errors

PACKAGES = ("autocrane", "webhook", "controller", "sidecars")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        root = importlib.import_module(package)
        names += [info.name for info in pkgutil.walk_packages(root.__path__, f"{package}.")
                  if not info.name.endswith("__main__")]
    return names


def _defined_exceptions() -> list[type[BaseException]]:
    found = []
    for name in _modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found.append(value)
    return found


def test_the_product_defines_errors_at_all() -> None:
    assert len(_defined_exceptions()) > 20


@pytest.mark.parametrize("error", _defined_exceptions(), ids=lambda e: f"{e.__module__}.{e.__qualname__}")
def test_every_error_the_product_defines_derives_from_autocrane_error(error: type[BaseException]) -> None:
    assert issubclass(error, errors.AutocraneError)


def test_untrusted_values_raise_the_one_error_class_from_errors() -> None:
    from autocrane import untrusted

    assert untrusted.UntrustedValueError is errors.UntrustedValueError
    with pytest.raises(errors.UntrustedValueError):
        untrusted.json_value(b"{", what="x", max_bytes=10)
