"""The pod's own annotations as the kubelet writes them through the downward API.

A ``downwardAPI`` volume item with ``fieldRef: {fieldPath: metadata.annotations}`` holds one
line per annotation, sorted by key: ``key="value"``, where the value is quoted like Go's ``%q``
(``strconv.Quote``): ``\\"``, ``\\\\``, ``\\n``, ``\\t``..., ``\\xNN`` for a byte that is not
valid UTF-8, ``\\uNNNN``/``\\UNNNNNNNN`` for unprintable runes, printable UTF-8 as is. Keys are
qualified names, so the first ``=`` ends the key. The kubelet replaces the file atomically
(``..data`` symlink swap), so a reader sees the whole old or new content.

Reading the file costs no API call and no RBAC; the price is latency: the kubelet rewrites it
when it syncs the pod after a change, within a second on the real node (docs/data-plane.md).

:func:`parse` and :func:`unquote` are pure (text in, annotations out); :func:`read` and
:class:`Watcher` read the file. The other direction, writing such a file as the kubelet would,
is only ever needed by tests and development tools: ``devcluster.downwardapi``.
"""

from __future__ import annotations

from pathlib import Path

from autocrane import errors

DIRECTORY = "/etc/autocrane/podinfo"
"""Where the injector mounts the downward-API volume in its containers."""
ANNOTATIONS_PATH = f"{DIRECTORY}/annotations"
"""The pod's annotations file inside that volume: the sidecars' default ``--annotations-file``."""

_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34, "'": 39}


class PodInfoError(errors.AutocraneError, ValueError):
    """The annotations file is malformed; the message names the line."""


def unquote(quoted: str, where: str = "value") -> str:
    """Decode one Go double-quoted string literal (with its quotes)."""
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        raise PodInfoError(f"{where}: expected a double-quoted string")
    body, out, i = quoted[1:-1], bytearray(), 0
    while i < len(body):
        ch = body[i]
        if ch == '"':
            raise PodInfoError(f"{where}: unescaped quote at offset {i}")
        if ch != "\\":
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
            continue
        if i + 1 >= len(body):
            raise PodInfoError(f"{where}: backslash at the end")
        kind = body[i + 1]
        if kind in _SIMPLE:
            out.append(_SIMPLE[kind])
            i += 2
        elif kind in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[kind]
            digits = body[i + 2:i + 2 + width]
            try:
                code = int(digits, 16)
            except ValueError:
                code = -1
            if len(digits) != width or code < 0:
                raise PodInfoError(f"{where}: bad \\{kind} escape at offset {i}") from None
            if kind == "x":
                out.append(code)
            else:
                try:
                    out += chr(code).encode("utf-8")
                except (ValueError, UnicodeEncodeError):
                    raise PodInfoError(f"{where}: bad code point \\{kind}{digits}") from None
            i += 2 + width
        elif kind in "01234567":
            digits = body[i + 1:i + 4]
            if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                raise PodInfoError(f"{where}: bad octal escape at offset {i}")
            out.append(int(digits, 8))
            i += 4
        else:
            raise PodInfoError(f"{where}: unknown escape \\{kind} at offset {i}")
    # Bytes that are not UTF-8 came from \xNN escapes; keep them visible rather than fail.
    return out.decode("utf-8", "replace")


def parse(text: str) -> dict[str, str]:
    """Parse the whole file into a dict; blank lines are ignored, malformed ones raise naming the line."""
    result: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        key, sep, quoted = line.partition("=")
        if not sep or not key:
            raise PodInfoError(f"line {number}: expected key=\"value\"")
        result[key] = unquote(quoted, f"line {number} ({key})")
    return result


def read(path: Path) -> dict[str, str]:
    """Read and parse the annotations file; a missing file raises FileNotFoundError."""
    return parse(path.read_text(encoding="utf-8", errors="surrogateescape"))


class Watcher:
    """Re-reads the annotations file only when its content changed; ``poll()`` is cheap to call often."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._raw: bytes | None = None
        self.annotations: dict[str, str] = {}
        self.error: str | None = None

    def invalidate(self) -> None:
        """Make the next :meth:`poll` parse the file again and report a change (its reader failed on it)."""
        self._raw = None

    def poll(self) -> bool:
        """Read the file; return True when its content changed since the last poll."""
        try:
            raw = self.path.read_bytes()
        except OSError as error:
            self.error = f"{self.path}: {error.strerror or error}"
            self._raw = None  # the next successful read is parsed again, which clears the error
            return False
        if raw == self._raw:
            return False
        self._raw = raw
        try:
            self.annotations = parse(raw.decode("utf-8", "surrogateescape"))
            self.error = None
        except PodInfoError as error:
            self.error = f"{self.path}: {error}"
        return True
