"""Write a pod's annotations as the kubelet's downward API does, for tests and development runs.

The sidecars read ``/etc/autocrane/podinfo/annotations`` (:mod:`autocrane.podinfo` parses it);
tests and local runs of the in-pod programs need to write one. The product never does, so the
writing half lives here, outside the wheel.
"""

from __future__ import annotations


def quote(value: str) -> str:
    """Quote like Go's ``%q`` for the characters annotations normally hold."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_annotations(annotations: dict[str, str]) -> str:
    """The file the kubelet would write for ``annotations``."""
    return "\n".join(f"{key}={quote(annotations[key])}" for key in sorted(annotations))
