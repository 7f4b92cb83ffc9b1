"""Staged data rollouts (docs/controller.md, "Data rollouts").

``decision`` takes one rollout's next step (pure), ``resource`` encodes it in the ``DataRollout``
object (pure), ``repository`` is the data repository's client, ``loop`` the part of a pass that
observes, decides and hands the writes to the writer.
"""
