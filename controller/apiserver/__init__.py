"""The controller's Kubernetes plumbing: the pod informer, the leader election, the writer, bounded fan-out.

Everything here talks to the API server through ``autocrane.kube``; nothing here decides.
"""
