"""Development tools, not part of AutoCrane's product: the local cluster and its builds.

``python -m devcluster build|up`` builds the Go binaries and runs a local cluster; the tests and
benchmarks use the same modules. The wheel (and so every image) leaves this package out
(``pyproject.toml``), and no product package may import it (``.importlinter``).
"""
