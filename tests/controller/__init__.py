"""Unit tests of the controller's pure decisions and its small I/O helpers."""
