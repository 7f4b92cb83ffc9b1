"""``python -m autocrane``: the same as the ``autocrane`` command."""

from autocrane import cli

cli.main()
