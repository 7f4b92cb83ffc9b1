"""``-o json|yaml`` for the CLI's read commands (``status``, ``rollout list``, ``watchdog get``), as kubectl's.

Each command builds plain records (dicts, lists, strings, numbers) with a pure function and prints
them as a table by default, or as JSON or YAML for scripts. YAML comes from PyYAML, which the
commands offering it have through their extra (``kube``); it is imported only when asked for.
"""

from __future__ import annotations

import argparse
import json

FORMATS = ("table", "json", "yaml")


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", choices=FORMATS, default="table",
                        help="table (default), or json / yaml for scripts")


def render(value: object, output: str) -> str:
    """``value`` as JSON (2-space indent, sorted keys) or YAML (block style, sorted keys)."""
    if output == "json":
        return json.dumps(value, indent=2, sort_keys=True)
    if output == "yaml":
        import yaml

        return yaml.safe_dump(value, sort_keys=True, default_flow_style=False, allow_unicode=True).rstrip("\n")
    raise ValueError(f"output must be one of {', '.join(FORMATS)}, not {output!r}")
