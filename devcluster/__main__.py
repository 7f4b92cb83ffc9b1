"""``python -m devcluster``: see :mod:`devcluster.cli`."""

import sys

from devcluster import cli

sys.exit(cli.main(sys.argv[1:]))
