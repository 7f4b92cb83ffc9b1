"""Programs that run inside pods: the data deployer, watchdog healthz, and their tools."""
