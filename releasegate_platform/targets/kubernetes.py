"""The `kubernetes` deployment target: per environment a namespace; per version a Deployment and a Service named
`<service>-<version>` (DNS-1123-safe; the real version in labels and annotations), the image always
`<repository>@<artifact digest>` (never a tag: the digest is the one the signed provenance vouches for); traffic
through one Gateway API `HTTPRoute` per service and environment. Every write is a server-side apply with the
field manager `releasegate` (force), so re-applying a step changes nothing; every wait is on the Deployment's
real rollout status, with a deadline.

The HTTPRoute: a default rule whose backendRefs weigh the versions' Services (canary steps, blue-green 0/100,
rolling by ready replicas); while a candidate runs, a rule per routed tenant (an exact match on the tenant header)
and a rule for internal users carrying the canary cookie (a RegularExpression match on the `Cookie` header) send
them to the candidate. Named gaps: the gateway must set the tenant header from the Host `<tenant>.shop.test` and
drop the clients' own, as our HAProxy does, or a client can name any tenant; the gateway cannot check the
cookie's HMAC (any well-formed `rg_canary` gets the candidate: there the cookie is an opt-in, not an
authorisation); maintenance mode is not supported (`Unsupported`: a route cannot answer 503 by itself). The
stable version is recorded in the route's annotations.

Names, digests and the image repository are checked before any API call; the sync `kubernetes` client runs in a
thread (`asyncio.to_thread`)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from contracts.events import ObservedState
from contracts.names import check_name, shown
from releasegate_platform.targets.port import TargetError, Unsupported

FIELD_MANAGER = "releasegate"
APPLY = "application/apply-patch+yaml"
GATEWAY_GROUP, GATEWAY_VERSION, ROUTES = "gateway.networking.k8s.io", "v1", "httproutes"
NAME_LABEL, VERSION_LABEL = "app.kubernetes.io/name", "releasegate.dev/version"
DIGEST_LABEL, RELEASE_LABEL = "releasegate.dev/digest", "releasegate.dev/release"
MANAGED_BY = {"app.kubernetes.io/managed-by": "releasegate"}
VERSION_NOTE, DIGEST_NOTE, RELEASE_NOTE = "releasegate.dev/version", "releasegate.dev/digest", "releasegate.dev/release"
STABLE_VERSION_NOTE, STABLE_DIGEST_NOTE = "releasegate.dev/stable-version", "releasegate.dev/stable-digest"
ROUTING_NOTE = "releasegate.dev/routing"
CANARY_COOKIE = r"(^|;\s*)rg_canary=[a-z0-9][a-z0-9_-]{0,31}\.[0-9a-f]{32}(;|$)"
SERVICE_PORT = 80
MAX_TENANTS = 64  # matches per HTTPRoute rule

DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?")
TENANT = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
IMAGE_REPOSITORY = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+")
HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


class KubernetesTargetError(TargetError):
    """The API server refused a request, or a Deployment did not roll out in time."""


class UnsafeName(KubernetesTargetError, ValueError):
    """A name, digest or image that Kubernetes could not carry as given; refused before any API call."""


@dataclass(frozen=True)
class Placement:
    """Where one environment's versions go: its namespace, the Gateway routes attach to, the image repository."""

    namespace: str
    gateway: str
    image: str
    gateway_namespace: str | None = None
    tenant_header: str = "X-Tenant"
    port: int = 8080

    def __post_init__(self) -> None:
        _dns("namespace", self.namespace)
        _dns("gateway", self.gateway)
        if self.gateway_namespace is not None:
            _dns("gateway namespace", self.gateway_namespace)
        _match("image repository (no tag, no digest)", self.image, IMAGE_REPOSITORY)
        _match("tenant header", self.tenant_header, HEADER)


def _match(kind: str, value: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise UnsafeName(f"refusing {kind} {shown(value)}: it must match {pattern.pattern}")
    return value


def _dns(kind: str, value: object) -> str:
    return _match(f"{kind} (a DNS-1123 label)", value, DNS_LABEL)


def version_label(version: object) -> str:
    try:
        check_name("version", version)
    except ValueError as exc:
        raise UnsafeName(f"refusing {exc}") from None
    return _match("version (a label value)", version, LABEL_VALUE)


def workload_name(service: str, version: str) -> str:
    """`<service>-<version>` as a DNS-1123 label: dots and underscores become dashes, and then a short hash of the
    real version keeps `v1.2` and `v1-2` apart."""
    _dns("service", service)
    slug = version_label(version)
    if re.fullmatch(r"[a-z0-9-]+", slug) is None:
        slug = f"{re.sub(r'[._]', '-', slug)}-{hashlib.sha256(slug.encode()).hexdigest()[:6]}"
    return _dns("workload name <service>-<version>", f"{service}-{slug}")


def image_for(repository: str, digest: object) -> str:
    """`<repository>@sha256:<hex>`; an artifact without a sha256 digest is refused (images by digest, never a tag)."""
    _match("image digest", digest, DIGEST)
    return f"{repository}@{digest}"


def _digest_label(digest: str) -> str:
    # a label value holds at most 63 characters: the first 32 hex digits (128 bits) label, the full digest is in
    # the annotation and the image
    return digest.split(":", 1)[1][:32]


class KubernetesTarget:
    def __init__(
        self,
        api: client.ApiClient,
        placement: Callable[[str, str], Placement],
        *,
        rollout_timeout: float = 120.0,
        poll_seconds: float = 0.2,
    ) -> None:
        """`placement(service, environment)`: that environment's namespace, gateway and image repository."""
        self._apps, self._core = client.AppsV1Api(api), client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._placement, self._timeout, self._poll = placement, rollout_timeout, poll_seconds

    # -- calls to the API server -------------------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, missing_ok: bool = False, **kw: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            detail = exc.reason
            try:
                detail = json.loads(exc.body or "{}").get("message") or detail
            except ValueError:
                pass
            raise KubernetesTargetError(f"Kubernetes API refused to {what} ({exc.status}): {detail}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesTargetError(f"Kubernetes API unreachable while trying to {what}: {exc}") from None

    async def _apply_deployment(self, ns: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        await self._call(
            f"apply Deployment {ns}/{name}",
            self._apps.patch_namespaced_deployment,
            name,
            ns,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
        )

    async def _apply_service(self, ns: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        await self._call(
            f"apply Service {ns}/{name}",
            self._core.patch_namespaced_service,
            name,
            ns,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
        )

    async def _route(self, ns: str, service: str) -> dict[str, Any] | None:
        return await self._call(
            f"read HTTPRoute {ns}/{service}",
            self._custom.get_namespaced_custom_object,
            GATEWAY_GROUP,
            GATEWAY_VERSION,
            ns,
            ROUTES,
            service,
            missing_ok=True,
        )

    async def _deployments(self, ns: str, service: str) -> list[Any]:
        found = await self._call(
            f"list Deployments of {service} in {ns}",
            self._apps.list_namespaced_deployment,
            ns,
            label_selector=f"{NAME_LABEL}={service},app.kubernetes.io/managed-by=releasegate",
        )
        return list(found.items)

    # -- manifests ---------------------------------------------------------------------------------------------

    def _labels(self, service: str, version: str) -> dict[str, str]:
        return {NAME_LABEL: service, VERSION_LABEL: version, **MANAGED_BY}

    def _deployment(
        self, p: Placement, service: str, version: str, digest: str, release_id: str | None, replicas: int
    ) -> dict[str, Any]:
        name, image = workload_name(service, version), image_for(p.image, digest)
        labels = {**self._labels(service, version), DIGEST_LABEL: _digest_label(digest)}
        notes = {VERSION_NOTE: version, DIGEST_NOTE: digest}
        if release_id is not None:
            labels[RELEASE_LABEL] = _match("release id (a label value)", release_id, LABEL_VALUE)
            notes[RELEASE_NOTE] = release_id
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": p.namespace, "labels": labels, "annotations": notes},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {NAME_LABEL: service, VERSION_LABEL: version}},
                "template": {
                    "metadata": {"labels": labels, "annotations": notes},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "containers": [
                            {
                                "name": service,
                                "image": image,
                                "ports": [{"name": "http", "containerPort": p.port}],
                                "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
                                "securityContext": {
                                    "runAsNonRoot": True,
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                },
                            }
                        ],
                    },
                },
            },
        }

    def _service(self, p: Placement, service: str, version: str, digest: str) -> dict[str, Any]:
        name = workload_name(service, version)
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": p.namespace,
                "labels": {**self._labels(service, version), DIGEST_LABEL: _digest_label(digest)},
                "annotations": {VERSION_NOTE: version, DIGEST_NOTE: digest},
            },
            "spec": {
                "selector": {NAME_LABEL: service, VERSION_LABEL: version},
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}],
            },
        }

    def _route_body(self, p: Placement, service: str, routing: dict[str, Any]) -> dict[str, Any]:
        parent: dict[str, Any] = {"name": p.gateway}
        if p.gateway_namespace:
            parent["namespace"] = p.gateway_namespace
        weights: dict[str, int] = routing["weights"]
        rules: list[dict[str, Any]] = []
        candidate = routing.get("candidate")
        if candidate is not None:
            to_candidate = [{"name": workload_name(service, candidate), "port": SERVICE_PORT, "weight": 1}]
            if routing["tenants"]:
                rules.append(
                    {
                        "matches": [
                            {"headers": [{"type": "Exact", "name": p.tenant_header, "value": t}]}
                            for t in routing["tenants"]
                        ],
                        "backendRefs": to_candidate,
                    }
                )
            rules.append(
                {
                    "matches": [{"headers": [{"type": "RegularExpression", "name": "Cookie", "value": CANARY_COOKIE}]}],
                    "backendRefs": to_candidate,
                }
            )
        rules.append(
            {
                "backendRefs": [
                    {"name": workload_name(service, v), "port": SERVICE_PORT, "weight": w}
                    for v, w in sorted(weights.items())
                ]
            }
        )
        notes = {ROUTING_NOTE: json.dumps(routing, sort_keys=True, separators=(",", ":"))}
        if routing.get("stable"):
            notes[STABLE_VERSION_NOTE], notes[STABLE_DIGEST_NOTE] = routing["stable"]
        return {
            "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
            "kind": "HTTPRoute",
            "metadata": {
                "name": service,
                "namespace": p.namespace,
                "labels": {NAME_LABEL: service, **MANAGED_BY},
                "annotations": notes,
            },
            "spec": {"parentRefs": [parent], "rules": rules},
        }

    async def _routing(self, p: Placement, service: str) -> dict[str, Any]:
        route = await self._route(p.namespace, service)
        note = ((route or {}).get("metadata", {}).get("annotations") or {}).get(ROUTING_NOTE)
        routing = json.loads(note) if note else {}
        return {
            "weights": routing.get("weights", {}),
            "candidate": routing.get("candidate"),
            "tenants": routing.get("tenants", []),
            "stable": routing.get("stable"),
        }

    async def _apply_route(self, p: Placement, service: str, routing: dict[str, Any]) -> None:
        body = self._route_body(p, service, routing)
        await self._call(
            f"apply HTTPRoute {p.namespace}/{service}",
            self._custom.patch_namespaced_custom_object,
            GATEWAY_GROUP,
            GATEWAY_VERSION,
            p.namespace,
            ROUTES,
            service,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
        )

    def _where(self, service: str, environment: str) -> Placement:
        _dns("service", service)
        try:
            check_name("environment", environment)
        except ValueError as exc:
            raise UnsafeName(f"refusing {exc}") from None
        return self._placement(service, environment)

    # -- the port ----------------------------------------------------------------------------------------------

    async def stable(self, service: str, environment: str) -> tuple[str, str] | None:
        stable = (await self._routing(self._where(service, environment), service))["stable"]
        return (stable[0], stable[1]) if stable else None

    async def set_stable(self, service: str, environment: str, version: str, digest: str) -> None:
        p = self._where(service, environment)
        version_label(version)
        _match("image digest", digest, DIGEST)
        routing = await self._routing(p, service)
        routing["stable"] = [version, digest]
        await self._apply_route(p, service, routing)

    async def versions(self, service: str, environment: str) -> dict[str, int]:
        p = self._where(service, environment)
        return {
            (d.metadata.annotations or {}).get(VERSION_NOTE, d.metadata.labels.get(VERSION_LABEL)): (
                d.status.ready_replicas or 0
            )
            for d in await self._deployments(p.namespace, service)
        }

    async def run_version(
        self, service: str, environment: str, version: str, digest: str, release_id: str | None, replicas: int
    ) -> int:
        p = self._where(service, environment)
        deployment = self._deployment(p, service, version, digest, release_id, replicas)  # refuses bad names first
        name = deployment["metadata"]["name"]
        current = await self._call(
            f"read Deployment {p.namespace}/{name}",
            self._apps.read_namespaced_deployment,
            name,
            p.namespace,
            missing_ok=True,
        )
        if current is not None:
            running = (current.metadata.annotations or {}).get(DIGEST_NOTE)
            if running != digest:
                raise KubernetesTargetError(
                    f"{name} in {p.namespace} runs {running}, not {digest}: a version's digest never changes"
                )
            deployment["spec"]["replicas"] = max(replicas, current.spec.replicas or 0)
            if release_id is None:  # keep the release that started it
                for key in ("labels", "annotations"):
                    deployment["metadata"][key].update(
                        {k: v for k, v in (getattr(current.metadata, key) or {}).items() if k == RELEASE_LABEL}
                    )
                    deployment["spec"]["template"]["metadata"][key] = deployment["metadata"][key]
        await self._apply_service(p.namespace, self._service(p, service, version, digest))
        await self._apply_deployment(p.namespace, deployment)
        return await self._rolled_out(p.namespace, name, deployment["spec"]["replicas"])

    async def scale(self, service: str, environment: str, version: str, replicas: int) -> None:
        p = self._where(service, environment)
        name = workload_name(service, version)
        current = await self._call(
            f"read Deployment {p.namespace}/{name}", self._apps.read_namespaced_deployment, name, p.namespace
        )
        notes = current.metadata.annotations or {}
        body = self._deployment(p, service, version, notes.get(DIGEST_NOTE), notes.get(RELEASE_NOTE), replicas)
        await self._apply_deployment(p.namespace, body)
        await self._rolled_out(p.namespace, name, replicas)

    async def _rolled_out(self, ns: str, name: str, replicas: int) -> int:
        """Waits until the Deployment's controller has seen the latest spec and every replica is updated and
        available (`kubectl rollout status`'s rule); KubernetesTargetError at the deadline."""
        deadline = time.monotonic() + self._timeout
        while True:
            d = await self._call(f"read Deployment {ns}/{name}", self._apps.read_namespaced_deployment, name, ns)
            s = d.status
            seen = (s.observed_generation or 0) >= (d.metadata.generation or 0)
            updated, available, ready = s.updated_replicas or 0, s.available_replicas or 0, s.ready_replicas or 0
            total = s.replicas or 0
            if seen and updated == available == ready == total == replicas:
                return ready
            if time.monotonic() > deadline:
                raise KubernetesTargetError(
                    f"Deployment {ns}/{name} not rolled out within {self._timeout:.0f}s: want {replicas} replicas, "
                    f"{updated} updated, {available} available, {ready} ready"
                    + ("" if seen else " (the controller has not seen the latest spec)")
                )
            await asyncio.sleep(self._poll)

    async def shift(self, service: str, environment: str, weights: dict[str, int]) -> None:
        p = self._where(service, environment)
        for version, weight in weights.items():
            workload_name(service, version)
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
                raise UnsafeName(f"refusing weight {shown(weight)} for {version}: a percent from 0 to 100")
        routing = await self._routing(p, service)
        routing["weights"] = {**routing["weights"], **weights}
        stable = (routing["stable"] or [None])[0]
        others = [v for v in weights if v != stable]
        if others:
            routing["candidate"] = others[0]
        await self._apply_route(p, service, routing)

    async def route_tenants(self, service: str, environment: str, version: str, tenants: list[str]) -> None:
        p = self._where(service, environment)
        workload_name(service, version)
        checked = [_match("tenant (a DNS label)", t, TENANT) for t in tenants]
        routing = await self._routing(p, service)
        routing["tenants"] = sorted(set(routing["tenants"]) | set(checked))
        if len(routing["tenants"]) > MAX_TENANTS:
            raise KubernetesTargetError(f"more than {MAX_TENANTS} tenants on one HTTPRoute rule")
        routing["candidate"] = version
        await self._apply_route(p, service, routing)

    async def clear_tenant_routes(self, service: str, environment: str) -> None:
        p = self._where(service, environment)
        routing = await self._routing(p, service)
        routing["tenants"], routing["candidate"] = [], None
        await self._apply_route(p, service, routing)

    async def maintenance(self, service: str, environment: str, on: bool) -> None:
        raise Unsupported(
            f"maintenance mode is not supported on the kubernetes target of {environment}: an HTTPRoute cannot "
            "answer 503 by itself; scale the service to zero or stop writes in the application"
        )

    async def observe(self, service: str, environment: str) -> ObservedState:
        """Weights from the HTTPRoute's default rule as the API server holds it, tenants from its header matches,
        replicas from the Deployments' status."""
        p = self._where(service, environment)
        route = await self._route(p.namespace, service) or {}
        deployments = await self._deployments(p.namespace, service)
        version_of = {
            d.metadata.name: (d.metadata.annotations or {}).get(VERSION_NOTE, d.metadata.labels.get(VERSION_LABEL))
            for d in deployments
        }
        rules = route.get("spec", {}).get("rules", [])
        default = next((r for r in rules if not _header_matched(r)), {})  # the server adds a `/` path match
        raw = {version_of.get(ref["name"], ref["name"]): ref.get("weight", 1) for ref in default.get("backendRefs", [])}
        total = sum(raw.values()) or 1
        tenants = sorted(
            h["value"]
            for r in rules
            for m in r.get("matches", [])
            for h in m.get("headers", [])
            if h.get("name") == p.tenant_header
        )
        stable = (route.get("metadata", {}).get("annotations") or {}).get(STABLE_VERSION_NOTE)
        return ObservedState(
            weights={v: round(100 * w / total) for v, w in raw.items()},
            instances=[
                {
                    "deployment": d.metadata.name,
                    "version": version_of[d.metadata.name],
                    "image": d.spec.template.spec.containers[0].image,
                    "digest": (d.metadata.annotations or {}).get(DIGEST_NOTE),
                    "release_id": (d.metadata.annotations or {}).get(RELEASE_NOTE),
                    # the version's Service, as Pods of the cluster reach it
                    "endpoint": f"http://{d.metadata.name}.{p.namespace}.svc:{SERVICE_PORT}",
                    "replicas": d.spec.replicas or 0,
                    "ready": d.status.ready_replicas or 0,
                    "weight": raw.get(version_of[d.metadata.name], 0),
                }
                for d in deployments
            ],
            stable_version=stable,
            tenants_on_candidate=tenants,
        )

    async def retire(self, service: str, environment: str, version: str) -> None:
        p = self._where(service, environment)
        name = workload_name(service, version)
        routing = await self._routing(p, service)
        if version in routing["weights"] or routing["candidate"] == version:
            routing["weights"].pop(version, None)
            if routing["candidate"] == version:
                routing["candidate"], routing["tenants"] = None, []
            await self._apply_route(p, service, routing)
        await self._call(
            f"delete Deployment {p.namespace}/{name}",
            self._apps.delete_namespaced_deployment,
            name,
            p.namespace,
            missing_ok=True,
        )
        await self._call(
            f"delete Service {p.namespace}/{name}",
            self._core.delete_namespaced_service,
            name,
            p.namespace,
            missing_ok=True,
        )


def _header_matched(rule: dict[str, Any]) -> bool:
    return any(m.get("headers") for m in rule.get("matches", []))


def placement_for(spec: Any, environment: str) -> Placement:
    """A catalog `TargetSpec` of kind kubernetes → the environment's placement (namespace `releasegate-<env>`
    unless named)."""
    return Placement(
        namespace=spec.namespace or f"releasegate-{environment}",
        gateway=spec.gateway,
        image=spec.image,
        gateway_namespace=spec.gateway_namespace,
        tenant_header=spec.tenant_header,
        port=spec.port,
    )
