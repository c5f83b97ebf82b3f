"""The Helm chart deploy/helm/releasegate renders, and what it renders is accepted by a real API server (server-side
dry run as admin, then a real install into scratch namespaces); its RBAC grants the deployer's ServiceAccount
(releasegate) exactly the deployer's rules and the rollback service's (releasegate-rollback) exactly the
rollback's in each environment namespace, only those two services' pods mount a token (each its own), and a new
environment in the values gets its own Roles."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kubernetes.conftest import ADMIN_KUBECONFIG, REPO, poll

BIN = Path.home() / ".cache" / "releasegate" / "k8s" / "bin"
CHART = REPO / "deploy" / "helm" / "releasegate"
KUBE_VERSION = "v1.34.4"  # the test cluster's (deploy/k8s/build.sh)
SERVICES = {"coordinator", "gatekeeper", "deployer", "verifier", "dr-checker", "rollback"}
DIGEST = "sha256:" + "ab" * 32

# (api group, resource) -> verbs: each service's needs and nothing else (deploy/k8s/role.yaml.in)
DEPLOYER_RULES = {
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "pods"): {"get", "list", "watch"},
}
ROLLBACK_RULES = {
    ("apps", "deployments"): {"list", "delete"},
    ("", "services"): {"delete"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "patch"},
}
# Role name -> (its ServiceAccount, its rules)
ROLES = {
    "releasegate-deployer": ("releasegate", DEPLOYER_RULES),
    "releasegate-rollback": ("releasegate-rollback", ROLLBACK_RULES),
}


def render(tmp_path: Path, namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    values_file = tmp_path / f"values-{secrets.token_hex(3)}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    done = subprocess.run(
        [str(BIN / "helm"), "template", "rg", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
        + ["-f", str(values_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def kubectl_apply(docs: list[dict[str, Any]], tmp_path: Path, *, dry_run: bool) -> str:
    manifest = tmp_path / f"rendered-{secrets.token_hex(3)}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    args = [str(BIN / "kubectl"), "--kubeconfig", str(ADMIN_KUBECONFIG), "apply", "--server-side"]
    args += ["--field-manager=releasegate-chart-test", "-f", str(manifest)]
    if dry_run:
        args.append("--dry-run=server")
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"kubectl apply failed:\n{done.stdout}\n{done.stderr}"
    assert "Warning" not in done.stderr and "error" not in done.stderr.lower(), done.stderr
    return done.stdout


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields (resourceNames?): {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


@pytest.fixture
def scratch(admin_api: client.ApiClient) -> Iterator[str]:
    """A release namespace and its environment namespaces (<prefix>-staging/-production/-qa), deleted afterwards."""
    prefix = f"rg-chart-{secrets.token_hex(3)}"
    core = client.CoreV1Api(admin_api)
    names = [prefix, f"{prefix}-staging", f"{prefix}-production", f"{prefix}-qa"]
    for ns in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    yield prefix
    for ns in names:
        try:
            core.delete_namespace(ns)
        except ApiException as exc:
            if exc.status != 404:
                raise


def values_for(prefix: str, *environments: str, **extra: Any) -> dict[str, Any]:
    return {
        "image": {"repository": "registry.invalid/releasegate", "digest": DIGEST},
        "environments": [{"name": env, "namespace": f"{prefix}-{env}"} for env in environments],
        **extra,
    }


def test_the_chart_renders_six_hardened_services_by_digest(tmp_path: Path):
    docs = render(tmp_path, "releasegate-system", {"image": {"repository": "registry.invalid/rg", "digest": DIGEST}})
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in of_kind(docs, "Deployment")}
    assert set(deployments) == SERVICES
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == f"registry.invalid/rg@{DIGEST}"
        assert container["command"] == [f"releasegate-{name}"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert container["readinessProbe"] and container["livenessProbe"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RG_HEALTH_PORT"]["value"] == "8080"
        assert "8080/health" in " ".join(container["readinessProbe"]["exec"]["command"])
        # secrets only by reference, never as values
        assert env["RG_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "releasegate-kafka"
        assert env["RG_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "releasegate-database", "key": name}
        # only the services acting on deployment targets (the deployer, the rollback service that compensates
        # there) carry an API token, each its own ServiceAccount's, used through in-cluster configuration (no
        # kubeconfig: RG_KUBECONFIG unset, the mounted token re-read as the kubelet rotates it)
        assert not {"RG_KUBECONFIG", "RG_ROLLBACK_KUBECONFIG"} & set(env)
        assert "kubeconfig" not in {v["name"] for v in pod["volumes"]}
        if name in ("deployer", "rollback"):
            assert pod["serviceAccountName"] == {"deployer": "releasegate", "rollback": "releasegate-rollback"}[name]
            assert pod["automountServiceAccountToken"] is True
        else:
            assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False
    assert not of_kind(docs, "ConfigMap")  # no kubeconfig to carry
    accounts = {a["metadata"]["name"]: a for a in of_kind(docs, "ServiceAccount")}
    assert set(accounts) == {"releasegate", "releasegate-rollback"}
    assert all(a["automountServiceAccountToken"] is False for a in accounts.values())  # only where a pod asks
    assert "RG_SIGNING_KEY_FILE" in {
        e["name"] for e in deployments["coordinator"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    # a tag only when no digest is given; a malformed digest is refused at render time
    tagged = render(tmp_path, "releasegate-system", {"image": {"repository": "registry.invalid/rg", "tag": "1.2.3"}})
    assert {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in of_kind(tagged, "Deployment")} == {
        "registry.invalid/rg:1.2.3"
    }
    values_file = tmp_path / "bad.yaml"
    values_file.write_text(yaml.safe_dump({"image": {"digest": "sha256:nothex"}}))
    bad = subprocess.run(
        [str(BIN / "helm"), "template", "rg", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0 and "image.digest must be sha256" in bad.stderr


def test_the_rendered_roles_grant_only_what_each_service_needs(tmp_path: Path):
    docs = render(tmp_path, "releasegate-system", {})
    roles = of_kind(docs, "Role")
    assert sorted((r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles) == sorted(
        (ns, role) for ns in ("releasegate-staging", "releasegate-production") for role in ROLES
    )
    for role in roles:
        assert rules_of(role) == ROLES[role["metadata"]["name"]][1], role["metadata"]["name"]
    bindings = of_kind(docs, "RoleBinding")
    assert len(bindings) == len(roles)
    for binding in bindings:
        name = binding["metadata"]["name"]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": ROLES[name][0], "namespace": "releasegate-system"}
        ]
    assert not {"ClusterRole", "ClusterRoleBinding", "Secret"} & {d["kind"] for d in docs}
    # the chart and the test cluster (deploy/k8s/role.yaml.in, deploy/k8s/rbac.yaml) grant the same
    cluster = [
        d for d in yaml.safe_load_all((REPO / "deploy" / "k8s" / "role.yaml.in").read_text().replace("@", "x")) if d
    ]
    assert {d["metadata"]["name"]: rules_of(d) for d in cluster if d["kind"] == "Role"} == {
        name: rules for name, (_, rules) in ROLES.items()
    }
    assert {
        d["metadata"]["name"]: [s["name"] for s in d["subjects"]] for d in cluster if d["kind"] == "RoleBinding"
    } == {name: [account] for name, (account, _) in ROLES.items()}
    cluster_accounts = yaml.safe_load_all((REPO / "deploy" / "k8s" / "rbac.yaml").read_text())
    assert {d["metadata"]["name"] for d in cluster_accounts if d and d["kind"] == "ServiceAccount"} == {
        account for account, _ in ROLES.values()
    }


def test_the_rollback_may_not_share_the_deployers_service_account(tmp_path: Path):
    values_file = tmp_path / "same.yaml"
    values_file.write_text(yaml.safe_dump({"rollbackServiceAccount": {"name": "releasegate"}}))
    same = subprocess.run(
        [str(BIN / "helm"), "template", "rg", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert same.returncode != 0 and "rollbackServiceAccount.name must differ" in same.stderr


def test_a_third_environment_gets_its_namespace_and_role(tmp_path: Path, scratch: str, admin_api: client.ApiClient):
    docs = render(tmp_path, scratch, values_for(scratch, "staging", "production", "qa"))
    assert {d["metadata"]["name"] for d in of_kind(docs, "Namespace")} == {
        f"{scratch}-staging",
        f"{scratch}-production",
        f"{scratch}-qa",
    }
    qa = {r["metadata"]["name"]: r for r in of_kind(docs, "Role") if r["metadata"]["namespace"] == f"{scratch}-qa"}
    assert {name: rules_of(role) for name, role in qa.items()} == {name: rules for name, (_, rules) in ROLES.items()}
    assert {r["metadata"]["labels"]["releasegate.dev/environment"] for r in qa.values()} == {"qa"}
    out = kubectl_apply(docs, tmp_path, dry_run=True)
    assert "role.rbac.authorization.k8s.io/releasegate-deployer serverside-applied (server dry run)" in out
    assert "role.rbac.authorization.k8s.io/releasegate-rollback serverside-applied (server dry run)" in out
    # a dry run changed nothing
    assert client.RbacAuthorizationV1Api(admin_api).list_namespaced_role(f"{scratch}-qa").items == []


def test_the_rendered_chart_passes_a_server_side_dry_run(tmp_path: Path, scratch: str, admin_api: client.ApiClient):
    docs = render(tmp_path, scratch, values_for(scratch, "staging", "production"))
    out = kubectl_apply(docs, tmp_path, dry_run=True)
    assert out.count("(server dry run)") == len(docs)
    apps = client.AppsV1Api(admin_api)
    assert apps.list_namespaced_deployment(scratch).items == [], "a dry run must not create anything"
    assert client.RbacAuthorizationV1Api(admin_api).list_namespaced_role(f"{scratch}-staging").items == []


def service_account_api(admin_api: client.ApiClient, name: str, namespace: str) -> client.ApiClient:
    """An API client as the chart's ServiceAccount `namespace/name`, with a short-lived bound token."""
    token = (
        client.CoreV1Api(admin_api)
        .create_namespaced_service_account_token(
            name,
            namespace,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)),
        )
        .status.token
    )
    config = client.Configuration()
    config.host = admin_api.configuration.host
    config.ssl_ca_cert = admin_api.configuration.ssl_ca_cert
    config.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(config)


def probe(name: str = "probe") -> client.V1Deployment:
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="p", image=f"registry.invalid/p@{DIGEST}")]),
            ),
        ),
    )


def test_installed_for_real_its_service_accounts_may_act_only_as_their_roles_say(
    tmp_path: Path, scratch: str, admin_api: client.ApiClient
):
    docs = render(tmp_path, scratch, values_for(scratch, "staging", "production", createNamespaces=False))
    kubectl_apply(docs, tmp_path, dry_run=False)
    apps = client.AppsV1Api(admin_api)
    assert {d.metadata.name for d in apps.list_namespaced_deployment(scratch).items} == {f"rg-{s}" for s in SERVICES}
    staging = f"{scratch}-staging"

    # the deployer's ServiceAccount
    with service_account_api(admin_api, "releasegate", scratch) as sa_api:
        sa_apps = client.AppsV1Api(sa_api)
        body = probe()
        sa_apps.create_namespaced_deployment(staging, body)
        poll(
            lambda: apps.read_namespaced_deployment("probe", f"{scratch}-staging").status.available_replicas == 1,
            60,
            "the probe Deployment to become Available",
        )
        for ns in (scratch, f"{scratch}-qa", "default"):  # its own namespace and an environment not in the values
            with pytest.raises(ApiException) as refused:
                sa_apps.create_namespaced_deployment(ns, body)
            assert refused.value.status == 403
            assert "probe" not in {d.metadata.name for d in apps.list_namespaced_deployment(ns).items}
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(sa_api).list_namespaced_secret(f"{scratch}-staging")
        assert refused.value.status == 403

    # the rollback service's: exactly its Role in the environments; it may retire what the deployer started, never
    # start anything itself
    with service_account_api(admin_api, "releasegate-rollback", scratch) as rb_api:
        review = client.AuthorizationV1Api(rb_api).create_self_subject_rules_review(
            client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=staging))
        )
        granted: dict[tuple[str, str], set[str]] = {}
        for rule in review.status.resource_rules:
            for group in rule.api_groups or [""]:
                for resource in rule.resources or []:
                    granted.setdefault((group, resource), set()).update(rule.verbs)
        assert {k: v for k, v in granted.items() if k[0] not in ("authorization.k8s.io", "authentication.k8s.io")} == (
            ROLLBACK_RULES
        )
        rb_apps = client.AppsV1Api(rb_api)
        for ns in (staging, scratch):
            with pytest.raises(ApiException) as refused:
                rb_apps.create_namespaced_deployment(ns, probe("probe-rollback"))
            assert refused.value.status == 403
            assert "probe-rollback" not in {d.metadata.name for d in apps.list_namespaced_deployment(ns).items}
        with pytest.raises(ApiException) as refused:  # an environment not in the values
            rb_apps.delete_namespaced_deployment("probe", f"{scratch}-qa")
        assert refused.value.status == 403
        rb_apps.delete_namespaced_deployment("probe", staging)
        assert "probe" not in {d.metadata.name for d in apps.list_namespaced_deployment(staging).items}


API_VALUES = {
    "image": {"repository": "registry.invalid/rg", "digest": DIGEST},
    "api": {
        "oidcIssuer": "https://login.example.com/realms/rg",
        "url": "https://releasegate.example.com",
        "ciIssuers": ["https://token.actions.githubusercontent.com"],
    },
    "services": {"api": {"enabled": True}, "notifier": {"enabled": True}},
}


def pod_of(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (d,) = [
        d for d in of_kind(docs, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return d["spec"]["template"]["spec"]


def test_the_api_and_the_notifier_are_off_until_configured_and_then_hardened_without_a_token(tmp_path: Path):
    plain = render(tmp_path, "releasegate-system", {"image": {"repository": "registry.invalid/rg", "digest": DIGEST}})
    assert not of_kind(plain, "Service")
    docs = render(tmp_path, "releasegate-system", API_VALUES)
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in of_kind(docs, "Deployment")}
    assert deployments == SERVICES | {"api", "notifier"}
    for name, command in (("api", ["releasegate-api"]), ("notifier", ["python", "-m", "services.notifier"])):
        pod = pod_of(docs, name)
        (container,) = pod["containers"]
        assert container["command"] == command and container["image"] == f"registry.invalid/rg@{DIGEST}"
        assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"] is True
        env = {e["name"]: e for e in container["env"]}
        assert env["RG_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "releasegate-kafka", "key": name}
        assert env["RG_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "releasegate-database", "key": name}
        assert container["readinessProbe"] and container["livenessProbe"]
    # the API: on its port behind a Service, trusting the configured issuers, signing with its own key
    pod = pod_of(docs, "api")
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RG_API_HOST"] == "0.0.0.0" and env["RG_API_PORT"] == "18800"
    assert env["RG_OIDC_ISSUER"] == "https://login.example.com/realms/rg"
    assert env["RG_API_URL"] == "https://releasegate.example.com"
    assert env["RG_CI_ISSUERS"] == '["https://token.actions.githubusercontent.com"]'
    assert env["RG_API_SIGNING_KEY_FILE"] == "/var/run/secrets/releasegate/keys/api.key"
    assert container["ports"] == [{"name": "http", "containerPort": 18800, "protocol": "TCP"}]
    (key,) = [v for v in pod["volumes"] if v["name"] == "signing-key"]
    assert key["secret"]["secretName"] == "releasegate-api-key"
    assert key["secret"]["items"] == [{"key": "api.key", "path": "api.key"}]
    (service,) = of_kind(docs, "Service")
    assert service["metadata"]["name"] == "rg-api"
    assert service["spec"]["selector"] == {"app.kubernetes.io/instance": "rg", "app.kubernetes.io/component": "api"}
    assert service["spec"]["ports"] == [{"name": "http", "port": 18800, "targetPort": "http", "protocol": "TCP"}]
    # its public key reaches the coordinator and the gatekeeper (they check the commands it signs), not its private
    for name in ("coordinator", "gatekeeper"):
        (keys,) = [v for v in pod_of(docs, name)["volumes"] if v["name"] == "signing-key"]
        sources = keys["projected"]["sources"] if "projected" in keys else [{"secret": keys["secret"]}]
        names = {s["secret"].get("name", s["secret"].get("secretName")) for s in sources}
        assert "releasegate-api-public-key" in names and "releasegate-api-key" not in names
    # the notifier: its routes' secrets copied owner-only into memory by an init container; the Secret itself is not
    # mounted into the notifier
    pod = pod_of(docs, "notifier")
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RG_NOTIFIER_SECRETS_DIR"] == "/var/run/releasegate-notifier"
    assert env["RG_API_URL"] == "https://releasegate.example.com"
    assert {m["name"] for m in container["volumeMounts"]} == {"tmp", "run", "store", "notifier-secrets"}
    (init,) = pod["initContainers"]
    assert {m["name"] for m in init["volumeMounts"]} == {"notifier-routes", "notifier-secrets"}
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["notifier-secrets"]["emptyDir"]["medium"] == "Memory"
    assert volumes["notifier-routes"]["secret"]["secretName"] == "releasegate-notifier-routes"


def test_the_api_needs_its_issuer_and_url(tmp_path: Path):
    for missing in ("oidcIssuer", "url"):
        values = {**API_VALUES, "api": {k: v for k, v in API_VALUES["api"].items() if k != missing}}
        values_file = tmp_path / f"no-{missing}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        done = subprocess.run(
            [str(BIN / "helm"), "template", "rg", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0 and f"api.{missing} is required" in done.stderr
