"""The raw Kubernetes JSON AutoCrane reads and writes, as TypedDicts (no logic).

Objects stay plain dicts, as the API server sends them and as the API documentation describes
them; these types only name their fields (``total=False``: every field may be absent) so the type
checker can follow what code reads and builds. Only the fields AutoCrane touches are listed.
Values from outside (a pod in an AdmissionReview, annotations anyone may write) may still be of
any type at run time: the code that reads them checks, and these types say what it expects.
"""

from __future__ import annotations

from typing import Any, TypedDict

# --- metadata -----------------------------------------------------------------------------------


class OwnerReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectMeta(TypedDict, total=False):
    name: str
    generateName: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    deletionTimestamp: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReference]
    managedFields: list[dict[str, Any]]


# --- pods -------------------------------------------------------------------------------------------


class VolumeMount(TypedDict, total=False):
    name: str
    mountPath: str
    readOnly: bool


class ContainerPort(TypedDict, total=False):
    name: str
    containerPort: int
    protocol: str


class Container(TypedDict, total=False):
    name: str
    image: str
    imagePullPolicy: str
    command: list[str]
    args: list[str]
    env: list[dict[str, Any]]
    ports: list[ContainerPort]
    resources: dict[str, dict[str, str]]
    securityContext: dict[str, Any]
    volumeMounts: list[VolumeMount]
    restartPolicy: str
    """``Always`` on a native sidecar (an init container that runs beside the app)."""
    startupProbe: dict[str, Any]
    readinessProbe: dict[str, Any]
    livenessProbe: dict[str, Any]
    terminationMessagePath: str
    terminationMessagePolicy: str


class Volume(TypedDict, total=False):
    name: str
    emptyDir: dict[str, Any]
    downwardAPI: dict[str, Any]


class PodSpec(TypedDict, total=False):
    containers: list[Container]
    initContainers: list[Container]
    ephemeralContainers: list[Container]
    volumes: list[Volume]
    nodeName: str
    hostNetwork: bool
    restartPolicy: str


class PodCondition(TypedDict, total=False):
    type: str
    status: str


class PodStatus(TypedDict, total=False):
    phase: str
    podIP: str
    conditions: list[PodCondition]


class Pod(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus


class PodTemplate(TypedDict, total=False):
    metadata: ObjectMeta
    spec: PodSpec


# --- workloads --------------------------------------------------------------------------------------


class DeploymentSpec(TypedDict, total=False):
    replicas: int
    selector: dict[str, Any]
    template: PodTemplate
    paused: bool


class Deployment(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: DeploymentSpec
    status: dict[str, Any]


class ReplicaSetSpec(TypedDict, total=False):
    replicas: int
    template: PodTemplate


class ReplicaSet(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: ReplicaSetSpec
    status: dict[str, Any]


# --- coordination, events, answers ------------------------------------------------------------------


class LeaseSpec(TypedDict, total=False):
    holderIdentity: str | None
    leaseDurationSeconds: int
    acquireTime: str
    renewTime: str
    leaseTransitions: int


class Lease(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: LeaseSpec


class ObjectReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    namespace: str
    name: str
    uid: str


class EventSource(TypedDict, total=False):
    component: str


class Event(TypedDict, total=False):
    """A core/v1 Event (shown by ``kubectl describe``)."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    involvedObject: ObjectReference
    type: str
    reason: str
    message: str
    count: int
    firstTimestamp: str
    lastTimestamp: str
    source: EventSource
    reportingComponent: str
    reportingInstance: str


class StatusDetails(TypedDict, total=False):
    name: str
    kind: str
    retryAfterSeconds: int


class Status(TypedDict, total=False):
    """The API server's answer to a refused request (and a watch's ERROR event)."""

    kind: str
    apiVersion: str
    status: str
    message: str
    reason: str
    code: int
    details: StatusDetails


# --- admission ----------------------------------------------------------------------------------------


class GroupVersionKind(TypedDict, total=False):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict, total=False):
    group: str
    version: str
    resource: str


class AdmissionRequest(TypedDict, total=False):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: str
    operation: str
    namespace: str
    name: str
    object: dict[str, Any]
    oldObject: dict[str, Any]
    dryRun: bool


class AdmissionResponse(TypedDict, total=False):
    uid: str
    allowed: bool
    patchType: str
    patch: str
    """The RFC 6902 patch, base64."""
    warnings: list[str]
    status: Status
    auditAnnotations: dict[str, str]


class AdmissionReview(TypedDict, total=False):
    apiVersion: str
    kind: str
    request: AdmissionRequest
    response: AdmissionResponse
