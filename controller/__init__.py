"""The controller: watchdog probing, evictions within PDB limits, staged data rollouts."""
