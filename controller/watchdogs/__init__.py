"""Watchdogs: ``probing`` calls the pods' watchdog URLs (HTTP);
``health`` turns the answers into status patches (pure).
"""
