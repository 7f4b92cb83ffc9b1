"""cert-manager on the local cluster: its CRDs, and its controller and cainjector as processes.

The binary is ``devcluster/gosrc/cert-manager`` built from ``github.com/cert-manager/cert-manager``
at ``build.CERT_MANAGER_VERSION`` (recipe ``cert-manager``); the CRDs are that module's own files
(``deploy/crds/*.yaml``, what its chart templates from). Both roles run on the host like KCM: with
the cluster's admin kubeconfig, no leader election, logs in ``DIR/logs/cert-manager-*.log``.

:meth:`CertManager.start` is a context manager: on exit it stops both processes and deletes the
CRDs, which deletes every Issuer, Certificate and CertificateRequest with them (the Secrets
cert-manager wrote stay in their namespaces, as they do when cert-manager is uninstalled).
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path

from devcluster import build
from devcluster.controlplane import ControlPlane, ControlPlaneError, Process, free_port

CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ROLES = ("controller", "cainjector")


def crd_files() -> list[Path]:
    """The module's CRD manifests, one CRD each (downloaded into the Go module cache if missing)."""
    files = sorted((build.module_dir(build.recipe_named("cert-manager")) / "deploy" / "crds").glob("*.yaml"))
    if not files:
        raise ControlPlaneError(f"no CRDs in deploy/crds of cert-manager {build.CERT_MANAGER_VERSION}")
    return files


def crd_name(file: Path) -> str:
    """A CRD's name from its file's: controller-gen writes ``GROUP_PLURAL.yaml`` for ``PLURAL.GROUP``."""
    group, _, plural = file.stem.partition("_")
    return f"{plural}.{group}"


@dataclasses.dataclass
class CertManager:
    plane: ControlPlane
    binary: Path
    crds: list[str]
    verbosity: int = 2
    processes: list[Process] = dataclasses.field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def start(cls, plane: ControlPlane, *, verbosity: int = 2) -> Iterator[CertManager]:
        """Build (if needed), install the CRDs, start controller and cainjector; undo it all on exit."""
        binary = build.ensure_binaries(only=["cert-manager"])["cert-manager"]
        files = crd_files()
        running = cls(plane, binary, [crd_name(f) for f in files], verbosity)
        try:
            # Server-side: the Issuer CRDs (~320 kB) exceed client-side apply's annotation limit.
            running._kubectl("apply", "--server-side", "--force-conflicts", *[f"--filename={f}" for f in files])
            plane.wait("cert-manager's CRDs Established", running._established)
            for role in ROLES:
                running._spawn(role)
            yield running
        finally:
            running.stop()

    def restart(self, role: str, *args: str) -> None:
        """Run ``role`` again with these extra flags (``--feature-gates=...``; none: as started)."""
        (proc,) = [p for p in self.processes if p.name == f"cert-manager-{role}"]
        self.plane.stop_program(proc)
        self.processes.remove(proc)
        self._spawn(role, *args)

    def _spawn(self, role: str, *args: str) -> None:
        port = free_port()
        self.processes.append(self.plane.spawn_program(f"cert-manager-{role}", [
            str(self.binary), role, f"--kubeconfig={self.plane.kubeconfig}",
            f"--health-address=127.0.0.1:{port}", f"-v={self.verbosity}", *args]))
        self.plane.wait(f"cert-manager {role} /livez", lambda: self.plane.http_ok(f"http://127.0.0.1:{port}/livez"))

    def stop(self) -> None:
        """Stop the processes, then delete the CRDs (and with them every cert-manager object)."""
        for proc in reversed(self.processes):
            self.plane.stop_program(proc)
        self.processes.clear()
        if self.crds:
            self._kubectl("delete", "customresourcedefinition", "--ignore-not-found", "--wait=true", *self.crds)
            self.crds = []

    def check_alive(self) -> None:
        """Raise, with the log's tail, if the controller or cainjector has exited."""
        for proc in self.processes:
            code = proc.popen.poll()
            if code is not None:
                raise ControlPlaneError(f"{proc.name} exited with {code}; last log lines:\n{proc.tail()}")

    def _established(self) -> bool:
        for name in self.crds:
            crd = self.plane.get(f"{CRDS_PATH}/{name}")
            conditions = crd.get("status", {}).get("conditions", []) if crd else []
            if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                return False
        return True

    def _kubectl(self, *args: str) -> None:
        argv = [str(build.bin_dir() / "kubectl"), f"--kubeconfig={self.plane.kubeconfig}", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise ControlPlaneError(f"kubectl {args[0]} (cert-manager's CRDs) failed: {done.stderr.strip()}")
