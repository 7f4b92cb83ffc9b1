"""AutoCrane's shared core: what the webhook, the controller and the sidecars all need.

The three areas (``webhook``, ``controller``, ``sidecars``) import this package and never each
other; see docs/design.md for the import rules.
"""
