"""Hostile input against every surface (issue 8): each case a named test, and property tests."""
