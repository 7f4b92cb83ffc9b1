"""Tests of the images built with buildah from Dockerfile.webhook and Dockerfile.sidecar."""
