"""Evictions: ``decision`` plans which failing pods to evict, hold or skip, and why (pure)."""
