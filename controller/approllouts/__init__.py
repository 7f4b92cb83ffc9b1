"""Staged application rollouts on plain Deployments (docs/app-rollouts.md).

``objects`` decodes Deployments and ReplicaSets into slim records, ``decision`` takes one group's
next step (both pure); the loop around them observes the cluster and writes.
"""
