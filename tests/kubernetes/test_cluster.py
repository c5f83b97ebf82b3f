"""The Kubernetes test cluster is real: releasegate's ServiceAccount (the deployer's) can do exactly what its
per-environment Role grants (and a Deployment it creates really rolls out on the kwok node), the rollback service's
ServiceAccount exactly what its own Role grants (re-weigh an HTTPRoute, retire a Deployment and a Service; create
nothing), and everything else is refused by the API server with 403 - checked afterwards as admin, so a refusal
that still changed something would fail the test."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kubernetes.conftest import ENVIRONMENT_NAMESPACES, poll

SA = "system:serviceaccount:releasegate-system:releasegate"
ROLLBACK_SA = "system:serviceaccount:releasegate-system:releasegate-rollback"

# what the releasegate-deployer Role grants (deploy/k8s/role.yaml.in), as (api group, resource) -> verbs
GRANTED = {
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "pods"): {"get", "list", "watch"},
}
# what the releasegate-rollback Role grants (deploy/k8s/role.yaml.in): the calls of the kubernetes target's
# stable/versions/observe/shift/clear_tenant_routes/retire, nothing more
ROLLBACK_GRANTED = {
    ("apps", "deployments"): {"list", "delete"},
    ("", "services"): {"delete"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "patch"},
}
ROUTES = ("gateway.networking.k8s.io", "v1", "releasegate-staging", "httproutes")
# what every authenticated identity may do (system:basic-user and friends): not releasegate's doing
SELF_REVIEWS = {
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
}


def deployment(name: str, replicas: int = 2) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    automount_service_account_token=False,
                    containers=[client.V1Container(name="app", image="registry.invalid/rg-test@sha256:" + "0" * 64)],
                ),
            ),
        ),
    )


def forbidden(call, *args, who: str = SA, **kwargs) -> ApiException:
    with pytest.raises(ApiException) as refused:
        call(*args, **kwargs)
    assert refused.value.status == 403, f"expected 403 Forbidden, got {refused.value.status}: {refused.value.body}"
    message = json.loads(refused.value.body or "{}").get("message", "")
    assert f'User "{who}" cannot' in message, refused.value.body
    return refused.value


def rules_review(api: client.ApiClient, namespace: str) -> dict[tuple[str, str], set[str]]:
    """The identity's own SelfSubjectRulesReview in `namespace`, as (api group, resource) -> verbs, without the
    self-reviews every authenticated identity may create."""
    review = client.AuthorizationV1Api(api).create_self_subject_rules_review(
        client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace))
    )
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in review.status.resource_rules:
        for group in rule.api_groups or [""]:
            for resource in rule.resources or []:
                granted.setdefault((group, resource), set()).update(rule.verbs)
    for key in SELF_REVIEWS:
        assert granted.pop(key, set()) <= {"create"}, key
    return granted


def route(name: str, weights: dict[str, int]) -> dict:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "releasegate", "namespace": "releasegate-system"}],
            "rules": [{"backendRefs": [{"name": b, "port": 80, "weight": w} for b, w in weights.items()]}],
        },
    }


def route_weights(admin_api: client.ApiClient, name: str) -> dict[str, int]:
    stored = client.CustomObjectsApi(admin_api).get_namespaced_custom_object(*ROUTES, name)
    return {ref["name"]: ref["weight"] for ref in stored["spec"]["rules"][0]["backendRefs"]}


def route_names(admin_api: client.ApiClient) -> set[str]:
    listed = client.CustomObjectsApi(admin_api).list_namespaced_custom_object(*ROUTES)
    return {r["metadata"]["name"] for r in listed["items"]}


def deployment_names(admin_api: client.ApiClient, namespace: str) -> set[str]:
    return {d.metadata.name for d in client.AppsV1Api(admin_api).list_namespaced_deployment(namespace).items}


@pytest.fixture
def name(admin_api: client.ApiClient) -> Iterator[str]:
    """A fresh name for a Deployment, a Service and an HTTPRoute, deleted everywhere afterwards (as admin) whatever
    the test left."""
    n = f"rg-test-{secrets.token_hex(4)}"
    yield n
    apps, core, custom = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api), client.CustomObjectsApi(admin_api)
    for ns in (*ENVIRONMENT_NAMESPACES, "default", "kube-system"):
        for delete in (
            apps.delete_namespaced_deployment,
            core.delete_namespaced_service,
            lambda n, ns: custom.delete_namespaced_custom_object(*ROUTES[:2], ns, ROUTES[3], n),
        ):
            try:
                delete(n, ns)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def test_who_am_i(releasegate_api: client.ApiClient):
    review = client.AuthenticationV1Api(releasegate_api).create_self_subject_review(
        client.V1SelfSubjectReview(metadata=client.V1ObjectMeta())
    )
    assert review.status.user_info.username == SA


def test_the_rollback_service_is_its_own_service_account(rollback_api: client.ApiClient):
    review = client.AuthenticationV1Api(rollback_api).create_self_subject_review(
        client.V1SelfSubjectReview(metadata=client.V1ObjectMeta())
    )
    assert review.status.user_info.username == ROLLBACK_SA


@pytest.mark.parametrize("namespace", ENVIRONMENT_NAMESPACES)
def test_releasegate_is_granted_exactly_the_deployer_role_in_each_environment(
    releasegate_api: client.ApiClient, namespace: str
):
    assert rules_review(releasegate_api, namespace) == GRANTED


@pytest.mark.parametrize("namespace", ENVIRONMENT_NAMESPACES)
def test_the_rollback_service_is_granted_exactly_the_rollback_role_in_each_environment(
    rollback_api: client.ApiClient, namespace: str
):
    assert rules_review(rollback_api, namespace) == ROLLBACK_GRANTED


@pytest.mark.parametrize("identity", ["releasegate_api", "rollback_api"])
@pytest.mark.parametrize("namespace", ["default", "kube-system", "releasegate-system"])
def test_no_resource_rights_outside_the_environment_namespaces(
    request: pytest.FixtureRequest, identity: str, namespace: str
):
    assert rules_review(request.getfixturevalue(identity), namespace) == {}


def test_no_cluster_role_binding_names_releasegate(admin_api: client.ApiClient):
    bindings = client.RbacAuthorizationV1Api(admin_api).list_cluster_role_binding().items
    assert bindings, "the bootstrap ClusterRoleBindings are missing: is this a real API server?"
    for b in bindings:
        for s in b.subjects or []:
            assert not (s.kind == "ServiceAccount" and s.name.startswith("releasegate")), b.metadata.name
            assert not (s.kind == "Group" and s.name in ("system:serviceaccounts", "system:authenticated")) or (
                b.role_ref.name.startswith("system:")
            ), f"{b.metadata.name} grants {b.role_ref.name} to every service account"


def test_a_deployment_created_and_patched_by_releasegate_in_staging_becomes_available(
    releasegate_api: client.ApiClient, admin_api: client.ApiClient, name: str
):
    apps = client.AppsV1Api(releasegate_api)
    ns = "releasegate-staging"
    apps.create_namespaced_deployment(ns, deployment(name, replicas=2))
    apps.patch_namespaced_deployment(name, ns, {"spec": {"replicas": 3}})

    def available():
        d = client.AppsV1Api(admin_api).read_namespaced_deployment(name, ns)
        ok = d.status.available_replicas == 3 and d.status.observed_generation == d.metadata.generation
        return d if ok else None

    d = poll(available, 60, f"deployment {ns}/{name} to have 3 available replicas")
    assert any(c.type == "Available" and c.status == "True" for c in d.status.conditions)
    # the pods really were scheduled onto the kwok node and reported Ready, and releasegate may read them
    pods = client.CoreV1Api(releasegate_api).list_namespaced_pod(ns, label_selector=f"app={name}").items
    running = [p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    assert len(running) == 3
    assert {p.spec.node_name for p in running} == {"kwok-node-0"}


@pytest.mark.parametrize("namespace", ["default", "kube-system"])
def test_creating_a_deployment_outside_its_namespaces_is_forbidden(
    releasegate_api: client.ApiClient, admin_api: client.ApiClient, name: str, namespace: str
):
    forbidden(client.AppsV1Api(releasegate_api).create_namespaced_deployment, namespace, deployment(name))
    assert name not in deployment_names(admin_api, namespace)


def test_patching_a_deployment_outside_its_namespaces_is_forbidden(
    releasegate_api: client.ApiClient, admin_api: client.ApiClient, name: str
):
    admin_apps = client.AppsV1Api(admin_api)
    admin_apps.create_namespaced_deployment("default", deployment(name, replicas=1))
    forbidden(client.AppsV1Api(releasegate_api).patch_namespaced_deployment, name, "default", {"spec": {"replicas": 5}})
    assert admin_apps.read_namespaced_deployment(name, "default").spec.replicas == 1


@pytest.mark.parametrize("namespace", ENVIRONMENT_NAMESPACES)
def test_reading_secrets_in_its_own_namespaces_is_forbidden(
    releasegate_api: client.ApiClient, admin_api: client.ApiClient, namespace: str
):
    secret = f"rg-test-{secrets.token_hex(4)}"
    admin_core = client.CoreV1Api(admin_api)
    admin_core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=secret), string_data={"password": "s3cret"})
    )
    try:
        core = client.CoreV1Api(releasegate_api)
        forbidden(core.list_namespaced_secret, namespace)
        forbidden(core.read_namespaced_secret, secret, namespace)
    finally:
        admin_core.delete_namespaced_secret(secret, namespace)


def test_creating_pods_directly_or_replacing_a_service_is_forbidden(
    releasegate_api: client.ApiClient, admin_api: client.ApiClient, name: str
):
    ns = "releasegate-staging"
    core = client.CoreV1Api(releasegate_api)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="registry.invalid/x:1")]),
    )
    forbidden(core.create_namespaced_pod, ns, pod)
    assert name not in {p.metadata.name for p in client.CoreV1Api(admin_api).list_namespaced_pod(ns).items}

    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ServiceSpec(selector={"app": name}, ports=[client.V1ServicePort(port=80, target_port=8080)]),
    )
    created = core.create_namespaced_service(ns, svc)  # granted
    try:
        created.spec.ports[0].port = 81
        forbidden(core.replace_namespaced_service, name, ns, created)  # `update` is not granted on services
        assert client.CoreV1Api(admin_api).read_namespaced_service(name, ns).spec.ports[0].port == 80
    finally:
        core.delete_namespaced_service(name, ns)  # granted


def test_creating_a_cluster_role_binding_is_forbidden(releasegate_api: client.ApiClient, admin_api: client.ApiClient):
    binding_name = f"rg-test-{secrets.token_hex(4)}"
    binding = client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=binding_name),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="releasegate", namespace="releasegate-system")],
    )
    forbidden(client.RbacAuthorizationV1Api(releasegate_api).create_cluster_role_binding, binding)
    names = {b.metadata.name for b in client.RbacAuthorizationV1Api(admin_api).list_cluster_role_binding().items}
    assert binding_name not in names


def test_an_httproute_is_validated_and_stored_for_releasegate(releasegate_api: client.ApiClient, name: str):
    """The Gateway API CRDs are installed and Established, and the Role reaches httproutes."""
    custom = client.CustomObjectsApi(releasegate_api)
    args = ("gateway.networking.k8s.io", "v1", "releasegate-staging", "httproutes")
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "releasegate", "namespace": "releasegate-system"}],
            "rules": [{"backendRefs": [{"name": name, "port": 80, "weight": 100}]}],
        },
    }
    custom.create_namespaced_custom_object(*args, route)
    try:
        bad = {**route, "metadata": {"name": name + "-bad"}, "spec": {"rules": [{"backendRefs": [{"name": name}]}]}}
        with pytest.raises(ApiException) as invalid:  # a Service backendRef needs a port: CRD validation is real
            custom.create_namespaced_custom_object(*args, bad)
        assert invalid.value.status == 422, invalid.value.body
        stored = custom.get_namespaced_custom_object(*args, name)
        assert stored["spec"]["rules"][0]["backendRefs"][0]["weight"] == 100
    finally:
        custom.delete_namespaced_custom_object(*args, name)


# --- the rollback service's identity -----------------------------------------------------------------------------


def test_the_rollback_service_may_not_create_a_deployment_or_a_service_even_in_staging(
    rollback_api: client.ApiClient, admin_api: client.ApiClient, name: str
):
    ns = "releasegate-staging"
    forbidden(client.AppsV1Api(rollback_api).create_namespaced_deployment, ns, deployment(name), who=ROLLBACK_SA)
    assert name not in deployment_names(admin_api, ns)
    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ServiceSpec(selector={"app": name}, ports=[client.V1ServicePort(port=80, target_port=8080)]),
    )
    forbidden(client.CoreV1Api(rollback_api).create_namespaced_service, ns, svc, who=ROLLBACK_SA)
    assert name not in {s.metadata.name for s in client.CoreV1Api(admin_api).list_namespaced_service(ns).items}


def test_the_rollback_service_may_not_scale_a_deployment(
    rollback_api: client.ApiClient, admin_api: client.ApiClient, name: str
):
    """It may not start a version again: no patch or update of a Deployment (retire deletes, it never scales)."""
    ns, admin_apps = "releasegate-staging", client.AppsV1Api(admin_api)
    admin_apps.create_namespaced_deployment(ns, deployment(name, replicas=0))
    apps = client.AppsV1Api(rollback_api)
    forbidden(apps.patch_namespaced_deployment, name, ns, {"spec": {"replicas": 2}}, who=ROLLBACK_SA)
    forbidden(apps.patch_namespaced_deployment_scale, name, ns, {"spec": {"replicas": 2}}, who=ROLLBACK_SA)
    assert admin_apps.read_namespaced_deployment(name, ns).spec.replicas == 0


def test_the_rollback_service_may_reweigh_an_http_route_the_deployer_made(
    rollback_api: client.ApiClient, admin_api: client.ApiClient, name: str
):
    client.CustomObjectsApi(admin_api).create_namespaced_custom_object(
        *ROUTES, route(name, {f"{name}-v1": 90, f"{name}-v2": 10})
    )
    custom = client.CustomObjectsApi(rollback_api)
    assert custom.get_namespaced_custom_object(*ROUTES, name)["metadata"]["name"] == name
    # a server-side apply, as the kubernetes target writes the route (field manager releasegate, force)
    custom.patch_namespaced_custom_object(
        *ROUTES,
        name,
        route(name, {f"{name}-v1": 100, f"{name}-v2": 0}),
        field_manager="releasegate",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    assert route_weights(admin_api, name) == {f"{name}-v1": 100, f"{name}-v2": 0}
    # a merge patch too; but no replace (update), no delete, no list
    custom.patch_namespaced_custom_object(*ROUTES, name, {"metadata": {"annotations": {"rg-test": "patched"}}})
    stored = client.CustomObjectsApi(admin_api).get_namespaced_custom_object(*ROUTES, name)
    assert stored["metadata"]["annotations"]["rg-test"] == "patched"
    stored["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1
    forbidden(custom.replace_namespaced_custom_object, *ROUTES, name, stored, who=ROLLBACK_SA)
    forbidden(custom.delete_namespaced_custom_object, *ROUTES, name, who=ROLLBACK_SA)
    forbidden(custom.list_namespaced_custom_object, *ROUTES, who=ROLLBACK_SA)
    assert route_weights(admin_api, name) == {f"{name}-v1": 100, f"{name}-v2": 0}


def test_a_server_side_apply_of_a_missing_route_does_not_create_it_for_the_rollback_service(
    rollback_api: client.ApiClient, admin_api: client.ApiClient, name: str
):
    """A rollback acts only where the deployer created the route: the apply that would create it needs `create`."""
    forbidden(
        client.CustomObjectsApi(rollback_api).patch_namespaced_custom_object,
        *ROUTES,
        name,
        route(name, {f"{name}-v1": 100}),
        field_manager="releasegate",
        force=True,
        _content_type="application/apply-patch+yaml",
        who=ROLLBACK_SA,
    )
    assert name not in route_names(admin_api)


def test_the_rollback_service_may_delete_a_deployment_and_a_service_the_deployer_made(
    rollback_api: client.ApiClient, admin_api: client.ApiClient, name: str
):
    ns = "releasegate-staging"
    admin_apps, admin_core = client.AppsV1Api(admin_api), client.CoreV1Api(admin_api)
    admin_apps.create_namespaced_deployment(ns, deployment(name, replicas=1))
    admin_core.create_namespaced_service(
        ns,
        client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(selector={"app": name}, ports=[client.V1ServicePort(port=80, target_port=8080)]),
        ),
    )
    apps, core = client.AppsV1Api(rollback_api), client.CoreV1Api(rollback_api)
    assert name in {d.metadata.name for d in apps.list_namespaced_deployment(ns).items}
    forbidden(apps.read_namespaced_deployment, name, ns, who=ROLLBACK_SA)  # it lists; it never reads one alone
    apps.delete_namespaced_deployment(name, ns)
    core.delete_namespaced_service(name, ns)
    assert name not in deployment_names(admin_api, ns)
    assert name not in {s.metadata.name for s in admin_core.list_namespaced_service(ns).items}


@pytest.mark.parametrize("namespace", ["default", "kube-system"])
def test_the_rollback_service_may_delete_nothing_outside_its_environment_namespaces(
    rollback_api: client.ApiClient, admin_api: client.ApiClient, name: str, namespace: str
):
    admin_apps = client.AppsV1Api(admin_api)
    admin_apps.create_namespaced_deployment(namespace, deployment(name, replicas=0))
    forbidden(client.AppsV1Api(rollback_api).delete_namespaced_deployment, name, namespace, who=ROLLBACK_SA)
    assert name in deployment_names(admin_api, namespace)


@pytest.mark.parametrize("namespace", ENVIRONMENT_NAMESPACES)
def test_the_rollback_service_may_not_read_secrets_or_pods(rollback_api: client.ApiClient, namespace: str):
    core = client.CoreV1Api(rollback_api)
    forbidden(core.list_namespaced_secret, namespace, who=ROLLBACK_SA)
    forbidden(core.list_namespaced_pod, namespace, who=ROLLBACK_SA)
