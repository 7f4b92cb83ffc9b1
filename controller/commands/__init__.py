"""The controller's commands for people: ``autocrane status`` and ``autocrane rollout``."""
