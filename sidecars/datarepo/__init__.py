"""The data repository: turns sources into immutable, content-addressed versions and serves them."""
