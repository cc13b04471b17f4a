"""The real roles render the cluster's objects (render-only mode) and those objects are valid.

`ray_service_render_dir` / `helm_releases_render_dir` (the GPU Operator, the AMD device plugin,
KubeRay, kube-prometheus-stack) make the roles write what they would apply to a directory on the
control machine. Checks: Kubernetes schemas of the pinned K3s minor
(kubernetes-validate); every RayService (and the RayCluster it makes) against KubeRay's own CRD
schemas and the PodMonitors and the ServiceMonitor against the Prometheus Operator's, at the pinned
releases, strictly (crd_schema.py); golden files, and a second render changes nothing.
Set UPDATE_GOLDEN=1 to rewrite the golden files after an intended change.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crd_schema import assert_valid, crd_errors, raycluster_of
from helpers import REPO_ROOT, Render, poweredge_inventory, render_roles, run_playbook

from distinfer.config import HOST_LABEL, deployment_name
from distinfer.serve.edge import haproxy_binary

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
K3S_VERSION = yaml.safe_load((REPO_ROOT / "inventory/poweredge/group_vars/all/versions.yml").read_text())[
    "k3s_version"
]
KUBE_MINOR = re.match(r"v(\d+\.\d+)\.", K3S_VERSION)[1]  # type: ignore[index]
MASKED = "MASKED-depends-on-the-code"


@pytest.fixture(scope="module")
def guide_render(tmp_path_factory: pytest.TempPathFactory) -> Render:
    """The guide's inventory, everything rendered (kube-prometheus-stack's objects too)."""
    return render_roles(
        tmp_path_factory.mktemp("render"), poweredge_inventory(), ("addons", "ray_service", "monitoring")
    )


@pytest.fixture(scope="module")
def rendered(guide_render: Render) -> Path:
    return guide_render.out


@pytest.fixture(scope="module")
def secrets_render(tmp_path_factory: pytest.TempPathFactory) -> Render:
    """The guide's inventory with an API key and a Hugging Face token written in it (each test below
    judges its own; neither depends on the other being there)."""
    inventory = poweredge_inventory()
    inventory["all"]["vars"]["distinfer_api_key"] = "dk-NeverInAFile0123456789"
    inventory["all"]["vars"]["ray_service_hf_token"] = "hf_SuperSecretTokenValue123"
    return render_roles(tmp_path_factory.mktemp("secrets"), inventory)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _masked(rayservice: dict[str, Any]) -> dict[str, Any]:
    text = yaml.safe_dump(rayservice, sort_keys=True)
    text = re.sub(r"(distinfer\.io/(?:code|cluster-spec)-sha256: )\S+", rf"\1{MASKED}", text)
    return yaml.safe_load(text)


def _pod_templates(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


CORE_OBJECTS = ["namespace.yaml", "configmap-code.yaml", "secret.yaml", "service-openai.yaml"]


@pytest.mark.parametrize("name", CORE_OBJECTS)
def test_core_objects_match_the_kubernetes_schema(rendered: Path, name: str) -> None:
    kubernetes_validate.validate(_load(rendered / name), KUBE_MINOR, strict=True)


def test_pod_templates_match_the_kubernetes_schema(rendered: Path) -> None:
    for template in _pod_templates(_load(rendered / "rayservice.yaml")):
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "t"},
            "template": template,
        }
        kubernetes_validate.validate(pod_template, KUBE_MINOR, strict=True)


def test_rayservice_and_its_raycluster_match_kuberays_own_crds(rendered: Path) -> None:
    """KubeRay 1.4.2's own openAPIV3Schema (schemas/crds/), read as the API server reads it under
    `kubectl apply --validate=strict`: the RayService, and its rayClusterConfig as a RayCluster's spec."""
    rs = _load(rendered / "rayservice.yaml")
    assert (rs["apiVersion"], rs["kind"]) == ("ray.io/v1", "RayService")
    assert_valid(rs, KUBE_MINOR)


def _misspelt(obj: dict[str, Any], path: list[str | int], field: str, new_name: str) -> dict[str, Any]:
    broken = copy.deepcopy(obj)
    node = broken
    for step in path:
        node = node[step]
    node[new_name] = node.pop(field)
    return broken


def test_the_crd_check_refuses_a_misspelt_field_or_a_wrong_type(rendered: Path) -> None:
    """The check is real: the rendered objects, each with one deliberate mistake, are refused with the
    field named; the int-or-string and free-map fields still take what Kubernetes takes."""
    rs = _load(rendered / "rayservice.yaml")
    group: list[str | int] = ["spec", "rayClusterConfig", "workerGroupSpecs", 0]
    misspelt = _misspelt(rs, group, "rayStartParams", "rayStartParam")
    assert crd_errors(misspelt, KUBE_MINOR) == [
        "spec/rayClusterConfig/workerGroupSpecs/0: Additional properties are not allowed "
        "('rayStartParam' was unexpected)"
    ]
    assert crd_errors(raycluster_of(misspelt), KUBE_MINOR) == [
        "spec/workerGroupSpecs/0: Additional properties are not allowed ('rayStartParam' was unexpected)"
    ]
    deep = _misspelt(
        rs, ["spec", "rayClusterConfig", "headGroupSpec", "template", "spec"], "volumes", "volume"
    )
    assert any("'volume' was unexpected" in e for e in crd_errors(deep, KUBE_MINOR))
    wrong_type = copy.deepcopy(rs)
    wrong_type["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "1"
    assert crd_errors(wrong_type, KUBE_MINOR) == [
        "spec/rayClusterConfig/workerGroupSpecs/0/replicas: '1' is not of type 'integer'"
    ]
    start_params = copy.deepcopy(rs)
    start_params["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert crd_errors(start_params, KUBE_MINOR) == [
        "spec/rayClusterConfig/headGroupSpec/rayStartParams/num-cpus: 0 is not of type 'string'"
    ]
    bad_meta = _misspelt(rs, ["metadata"], "namespace", "namespaec")
    assert crd_errors(bad_meta, KUBE_MINOR) == [
        "metadata/(root): Additional properties are not allowed ('namespaec' was unexpected)"
    ]
    # Quantities are int-or-string: 4 and "4" are both GPUs; a boolean is neither.
    for value, ok in ((4, True), ("4", True), (True, False)):
        quantity = copy.deepcopy(rs)
        workers = quantity["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = value
        assert (crd_errors(quantity, KUBE_MINOR) == []) is ok, (value, crd_errors(quantity, KUBE_MINOR))
    pod_monitor, _, service_monitor = _all(rendered / "monitors.yaml")
    endpoint: list[str | int] = ["spec", "podMetricsEndpoints", 0]
    assert crd_errors(_misspelt(pod_monitor, endpoint, "port", "prot"), KUBE_MINOR) == [
        "spec/podMetricsEndpoints/0: Additional properties are not allowed ('prot' was unexpected)"
    ]
    numbered = copy.deepcopy(service_monitor)
    numbered["spec"]["endpoints"][0]["port"] = 9400  # a name in the CRD; the number is targetPort
    assert crd_errors(numbered, KUBE_MINOR) == ["spec/endpoints/0/port: 9400 is not of type 'string'"]


def test_rayservice_carries_the_guide_cluster(rendered: Path) -> None:
    rs = _load(rendered / "rayservice.yaml")
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    # The shipped choice (ray_service_upgrade_strategy): the cluster replaced in place, never a second one.
    assert rs["spec"]["upgradeStrategy"] == {"type": "None"}
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert sorted(groups) == [
        "nvidia-a100-sxm-80gb-x4",
        "nvidia-a100-sxm-80gb-x8",
        "nvidia-h100-pcie-80gb-x4",
    ]
    for group in groups.values():
        container = group["template"]["spec"]["containers"][0]
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert str(gpus) == group["rayStartParams"]["num-gpus"]
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert volumes["model-cache"]["hostPath"]["path"]
        env = {e["name"]: e for e in container["env"]}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "distinfer-secrets"
    # Every Ray node names its host: KubeRay 1.4.2 writes rayStartParams into the `ray start` line it
    # runs as the container's `bash -c` argument (common/pod.go: BuildPod, convertParamMap), and
    # Kubernetes expands $(VAR) there from the container's env, here the pod's node name (the K3s node
    # name is the inventory host's). One constant for every group: a host added changes no template.
    head = cluster["headGroupSpec"]
    for params, template in [(head["rayStartParams"], head["template"])] + [
        (g["rayStartParams"], g["template"]) for g in groups.values()
    ]:
        assert params["labels"] == f"{HOST_LABEL}=$(DISTINFER_NODE_NAME)"
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        assert env["DISTINFER_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["import_path"] == "distinfer.serve.app:build_app"
    assert "runtime_env" not in app  # Serve takes only remote URIs there; the code comes by PYTHONPATH
    deployments = {d["name"]: d for d in app["deployments"]}
    model = deployment_name(app["args"]["models"][0]["name"])
    # 16 GPUs / tensor parallel 4; replicas live only in `deployments` (a scale change stays lightweight)
    assert deployments[model]["num_replicas"] == 4
    assert "replicas" not in app["args"]["models"][0]
    assert serve["http_options"]["port"] == 8000


def test_the_endpoint_is_a_pinned_nodeport_on_the_edge_in_front_of_the_serve_service(
    rendered: Path, tmp_path: Path
) -> None:
    """What the benchmark loads from the control machine: http://<first server>:30800/v1, through the
    edge (templates/edge.yaml.j2): one HAProxy pod holding the deployment's slots and queue, its files
    from `distinfer edge-config` for the plan's Serve config, asking KubeRay's Serve service."""
    service = _load(rendered / "service-openai.yaml")
    assert service["spec"]["type"] == "NodePort"
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["nodePort"]) == (8000, "serve", 30800)
    configmap, deployment = _all(rendered / "edge.yaml")
    for obj in (configmap, deployment):
        kubernetes_validate.validate(obj, KUBE_MINOR, strict=True)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["replicas"] == 1  # two would each hold the whole count
    pod = deployment["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "edge", "configMap": {"name": configmap["metadata"]["name"]}}]
    assert "-db -f /etc/distinfer-edge/edge.cfg" in pod["containers"][0]["args"][0]
    # The plan's Serve config: the Llama 2 70B deployment, 4 replicas of the models file's cap.
    serve = _load(rendered / "serve-config.yaml")
    (app,) = serve["applications"]
    (model,) = app["args"]["models"]
    (spec,) = [d for d in app["deployments"] if d["name"] == deployment_name(model["name"])]
    cfg = configmap["data"]["edge.cfg"]
    upstream = "distinfer-serve-svc.distinfer.svc:8000 resolvers default init-addr last,libc,none"
    assert f"server serve {upstream} maxconn {model['max_ongoing_requests'] * spec['num_replicas']}" in cfg
    assert f"queue(model) ge {model['max_queued_requests']}" in cfg and "bind 0.0.0.0:8000" in cfg
    # The real HAProxy accepts it, with the mount's files where the pod has them.
    for name, content in configmap["data"].items():
        (tmp_path / name).write_bytes(content.replace("/etc/distinfer-edge", str(tmp_path)).encode())
    check = subprocess.run([haproxy_binary(), "-c", "-f", str(tmp_path / "edge.cfg")], capture_output=True)
    assert check.returncode == 0, check.stderr


def test_an_api_key_reaches_the_pods_only_through_the_secret(secrets_render: Render) -> None:
    out, output = secrets_render.out, secrets_render.output
    rs = _load(out / "rayservice.yaml")
    (app,) = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]
    assert app["args"]["api_key_env"] == "DISTINFER_API_KEY"  # the app asks for it
    for template in _pod_templates(rs):
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        assert env["DISTINFER_API_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "distinfer-secrets",
            "key": "api-key",
            "optional": True,
        }
    assert_valid(rs, KUBE_MINOR)
    for path in out.iterdir():
        assert "NeverInAFile" not in path.read_text(), path
    assert "NeverInAFile" not in output


def test_no_secret_reaches_the_rendered_files(secrets_render: Render) -> None:
    out, output = secrets_render.out, secrets_render.output
    for path in out.iterdir():
        assert "hf_SuperSecretTokenValue123" not in path.read_text(), path
    assert "hf_SuperSecretTokenValue123" not in output
    assert _load(out / "secret.yaml")["stringData"]["hf-token"] == "REDACTED"


def test_amd_hosts_get_their_own_group_and_device_plugin(tmp_path: Path) -> None:
    inventory = poweredge_inventory()
    agent = inventory["all"]["children"]["k3s_cluster"]["children"]["k3s_agent"]["hosts"]["r760xa"]
    agent.update(distinfer_gpu_vendor="amd", distinfer_gpu_model="mi300x")
    out = render_roles(tmp_path, inventory).out
    rs = _load(out / "rayservice.yaml")
    assert_valid(rs, KUBE_MINOR)
    groups = {g["groupName"]: g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    container = groups["amd-mi300x-x4"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["amd.com/gpu"] == 4
    assert "rocm" in container["image"]
    assert _load(out / "amd-device-plugin-values.yaml")["nodeSelector"] == {"distinfer.io/gpu-vendor": "amd"}


def test_an_autoscaling_model_renders_serve_autoscaling_and_kuberays_in_tree_autoscaler(
    tmp_path: Path,
) -> None:
    """The guide's model with `autoscaling:` (1 to 4 replicas of 4 GPUs): its deployment has Serve's
    autoscaling_config and no num_replicas, KubeRay's in-tree autoscaler is on, and each worker group
    starts at the hosts the least replicas need (one, the first host's) and may grow to all of its hosts;
    the RayService still fits KubeRay's CRD."""
    models = yaml.safe_load((REPO_ROOT / "files/models/llama2-70b-tp4.yaml").read_text())
    models["models"][0].pop("replicas", None)
    models["models"][0]["autoscaling"] = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16}
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump(models))
    rs = _load(
        render_roles(tmp_path, poweredge_inventory(models_file), ("ray_service",)).out / "rayservice.yaml"
    )
    assert_valid(rs, KUBE_MINOR)
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["upscalingMode"] == "Default"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert {name: (g["minReplicas"], g["replicas"], g["maxReplicas"]) for name, g in groups.items()} == {
        "nvidia-a100-sxm-80gb-x8": (1, 1, 1),
        "nvidia-a100-sxm-80gb-x4": (0, 0, 1),
        "nvidia-h100-pcie-80gb-x4": (0, 0, 1),
    }
    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    (deployment,) = [d for d in serve["applications"][0]["deployments"] if d["name"] != "OpenAIIngress"]
    assert "num_replicas" not in deployment
    assert deployment["autoscaling_config"]["min_replicas"] == 1
    assert deployment["autoscaling_config"]["max_replicas"] == 4


def test_gpu_operator_values_point_at_k3s_containerd(rendered: Path) -> None:
    env = {e["name"]: e["value"] for e in _load(rendered / "gpu-operator-values.yaml")["toolkit"]["env"]}
    assert env["CONTAINERD_SOCKET"] == "/run/k3s/containerd/containerd.sock"
    assert env["CONTAINERD_CONFIG"] == "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"


@pytest.mark.parametrize(
    "name",
    [
        "rayservice.yaml",
        "gpu-operator-values.yaml",
        "kuberay-operator-values.yaml",
        "namespace.yaml",
        "kube-prometheus-values.yaml",
    ],
)
def test_rendered_manifests_match_golden_files(rendered: Path, name: str) -> None:
    data = _load(rendered / name)
    if name == "rayservice.yaml":
        data = _masked(data)
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(yaml.safe_dump(data, sort_keys=True))
    assert data == yaml.safe_load(golden.read_text()), (
        f"{name} differs from {golden}; UPDATE_GOLDEN=1 if intended"
    )


def test_a_second_render_changes_nothing(guide_render: Render) -> None:
    """ray_service.yml again over the module's render (its first run wrote every file): nothing changes."""
    first = guide_render.runs["ray_service"]
    again = run_playbook(
        "playbooks/ray_service.yml", guide_render.inventory, extra_vars=guide_render.extra_vars
    )
    assert first.returncode == 0 and first.total_changed() > 0, first.output[-3000:]
    assert again.returncode == 0 and again.total_changed() == 0, again.output[-3000:]


# KubeRay's rule for what a RayService change does to the running RayCluster, re-implemented from
# ray-project/kuberay v1.4.2 (the pinned kuberay_operator_version),
# ray-operator/controllers/ray/rayservice_controller.go: shouldPrepareNewCluster, isClusterSpecHashEqual
# (with `partial`: worker groups appended at the end), isZeroDowntimeUpgradeEnabled, shouldUpdateCluster
# and generateHashWithoutReplicasAndWorkersToDelete (which mutes each worker group's Replicas,
# MinReplicas, MaxReplicas and ScaleStrategy.WorkersToDelete, then hashes the JSON of the
# RayClusterSpec). KubeRay hashes its Go struct; two specs equal as JSON here give the same struct and
# so the same hash, and a difference in a field of the struct (a node selector, an image) changes it.
KUBERAY_MUTED = ("replicas", "minReplicas", "maxReplicas")


def _kuberay_hash(cluster_spec: dict[str, Any]) -> str:
    spec = json.loads(json.dumps(cluster_spec))
    for group in spec.get("workerGroupSpecs", []):
        for field in KUBERAY_MUTED:
            group.pop(field, None)
        group.get("scaleStrategy", {}).pop("workersToDelete", None)
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _kuberay_action(running: dict[str, Any], goal: dict[str, Any]) -> str:
    """What KubeRay 1.4.2 does when the RayService `running` was built from becomes `goal`:
    `nothing` (the hashes match: not even new replica counts reach the RayCluster), `update` (worker
    groups appended at the end: the RayCluster is updated in place), `new-cluster` (a second RayCluster:
    upgradeStrategy NewCluster, or unset with ENABLE_ZERO_DOWNTIME's default) or `left-running`
    (upgradeStrategy None: the old RayCluster keeps running the old spec)."""
    have, want = running["spec"]["rayClusterConfig"], goal["spec"]["rayClusterConfig"]
    if _kuberay_hash(have) == _kuberay_hash(want):
        return "nothing"
    count = len(have.get("workerGroupSpecs", []))
    if len(want.get("workerGroupSpecs", [])) >= count:
        head = {**want, "workerGroupSpecs": want.get("workerGroupSpecs", [])[:count]}
        if _kuberay_hash(head) == _kuberay_hash(have):
            return "update"
    strategy = goal["spec"].get("upgradeStrategy", {}).get("type")
    if strategy is not None and strategy != "NewCluster":
        return "left-running"
    return "new-cluster"


def _with_host_lists(rs: dict[str, Any], node_labels: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The RayService as the template wrote it before issue 22: each worker group pinned to its hosts'
    names (nodeAffinity kubernetes.io/hostname In [hosts]) instead of selecting their labels."""
    rs = json.loads(json.dumps(rs))
    for group in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        selector = pod.pop("nodeSelector")
        hosts = [h for h, labels in node_labels.items() if labels.items() >= selector.items()]
        term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": hosts}]}
        pod["affinity"]["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    return rs


def test_kuberay_rule_reimplemented_tells_the_cases_apart(rendered: Path) -> None:
    """The rule above on hand-made changes, so it can fail: replicas alone do nothing, an appended
    group updates in place, an image change builds a second cluster unless the strategy is None."""
    rs = _load(rendered / "rayservice.yaml")
    groups = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    more = json.loads(json.dumps(rs))
    more["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(replicas=7, minReplicas=7, maxReplicas=7)
    assert _kuberay_action(rs, more) == "nothing"
    appended = json.loads(json.dumps(rs))
    appended["spec"]["rayClusterConfig"]["workerGroupSpecs"].append({**groups[0], "groupName": "extra"})
    assert _kuberay_action(rs, appended) == "update"
    inserted = json.loads(json.dumps(rs))
    inserted["spec"]["rayClusterConfig"]["workerGroupSpecs"].insert(0, {**groups[0], "groupName": "extra"})
    image = json.loads(json.dumps(rs))
    image["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
        "image"
    ] += "-2"
    assert _kuberay_action(rs, image) == _kuberay_action(rs, inserted) == "left-running"
    for strategy in ({"type": "NewCluster"}, None):
        image["spec"].pop("upgradeStrategy")
        if strategy:
            image["spec"]["upgradeStrategy"] = strategy
        assert _kuberay_action(rs, image) == "new-cluster"


def test_adding_a_host_changes_only_replica_counts_by_kuberays_own_rule(
    rendered: Path, tmp_path: Path
) -> None:
    """inventory/poweredge as shipped plus a second XE8545: it joins the XE8545 worker group (one pod
    per host, found by the group's node label) and its 4 GPUs add one tensor-parallel-4 replica, 5
    instead of the guide's 4. The two RayServices differ only where KubeRay 1.4.2 ignores differences
    (replica counts): the running RayCluster is not rebuilt. The template of before issue 22 (host
    names in each group) would have made KubeRay build a second RayCluster."""
    inventory = poweredge_inventory()
    agents = inventory["all"]["children"]["k3s_cluster"]["children"]["k3s_agent"]["hosts"]
    agents["xe8545-2"] = dict(agents["xe8545"])
    out = render_roles(tmp_path, inventory, ("ray_service",)).out
    before, after = _load(rendered / "rayservice.yaml"), _load(out / "rayservice.yaml")
    assert_valid(after, KUBE_MINOR)
    labels_before, labels_after = _load(rendered / "node-labels.yaml"), _load(out / "node-labels.yaml")
    groups = {g["groupName"]: g for g in after["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    group = groups["nvidia-a100-sxm-80gb-x4"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 2, 2)
    assert groups["nvidia-a100-sxm-80gb-x8"]["replicas"] == 1
    # The new node gets its peer's labels; the group selects them, no host name anywhere.
    selector = group["template"]["spec"]["nodeSelector"]
    assert selector == {"distinfer.io/worker-group": "nvidia-a100-sxm-80gb-x4"}
    assert labels_after["xe8545-2"] == labels_after["xe8545"] == labels_before["xe8545"]
    assert [h for h, v in labels_after.items() if v.items() >= selector.items()] == ["xe8545", "xe8545-2"]
    worker_groups = json.dumps(after["spec"]["rayClusterConfig"]["workerGroupSpecs"])
    assert not [host for host in labels_after if f'"{host}"' in worker_groups]
    (app,) = yaml.safe_load(after["spec"]["serveConfigV2"])["applications"]
    replicas = {d["name"]: d["num_replicas"] for d in app["deployments"]}
    assert replicas["model-meta-llama_Llama-2-70b-chat-hf"] == 5
    # KubeRay's rule: nothing new is built; the role copies the replica counts (tasks/cluster.yml).
    assert _kuberay_action(before, after) == "nothing"
    hash_key = "distinfer.io/cluster-spec-sha256"
    assert before["metadata"]["annotations"][hash_key] == after["metadata"]["annotations"][hash_key]
    # The negative check: the same change with the old host-list template.
    old_before, old_after = _with_host_lists(before, labels_before), _with_host_lists(after, labels_after)
    assert _kuberay_action(old_before, old_after) == "left-running"  # under the explicit None
    for rs in (old_before, old_after):
        rs["spec"].pop("upgradeStrategy")  # as the RayService was before issue 22: no strategy set
    assert _kuberay_action(old_before, old_after) == "new-cluster"


def test_chat_page_objects_are_valid_and_ask_the_serve_service(rendered: Path) -> None:
    """The chat page beside the RayService (roles/ray_service/tasks/chat.yml): a Deployment and a
    Service valid for the pinned K3s, running `distinfer chat` from the mounted wheel against the Serve
    service, with the Gradio requirements.lock pins."""
    objects = [o for o in yaml.safe_load_all((rendered / "chat.yaml").read_text()) if o]
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Deployment", "distinfer-chat"),
        ("Service", "distinfer-chat"),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_MINOR, strict=True)
    deployment, service = objects
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    script = container["args"][0]
    (gradio_pin,) = re.findall(r"(?m)^gradio==\S+$", (REPO_ROOT / "requirements.lock").read_text())
    assert f"pip install --no-cache-dir --quiet {gradio_pin} " in script
    assert "distinfer.cli chat --url http://distinfer-serve-svc.distinfer.svc:8000 --host 0.0.0.0" in script
    env = {e["name"]: e for e in container["env"]}
    wheel = _load(rendered / "configmap-code.yaml")["binaryData"]
    assert env["PYTHONPATH"]["value"] == f"/opt/distinfer/wheel/{next(iter(wheel))}"
    assert env["DISTINFER_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "distinfer-secrets",
        "key": "api-key",
        "optional": True,
    }
    assert pod["volumes"] == [{"name": "distinfer-code", "configMap": {"name": "distinfer-code"}}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "chat"}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [
        {"name": "chat", "port": 7860, "targetPort": "chat", "nodePort": 30860}
    ]


def _all(path: Path) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(path.read_text()) if o]


def test_monitors_match_the_prometheus_operator_crds_and_find_the_ray_pods(rendered: Path) -> None:
    """Valid against the Prometheus Operator's own CRD schemas (v0.79.2, as kube-prometheus-stack's
    pinned chart ships them; schemas/crds/). PodMonitors as KubeRay documents them: the RayService's
    head and worker pods (by the labels the rendered RayService gives them and KubeRay's node type) on
    the `metrics` port the pods declare; the GPU Operator's DCGM exporter Service by its label and port
    name. Every target labelled `host`."""
    monitors = _all(rendered / "monitors.yaml")
    assert [(m["kind"], m["metadata"]["name"]) for m in monitors] == [
        ("PodMonitor", "distinfer-ray-head"),
        ("PodMonitor", "distinfer-ray-worker"),
        ("ServiceMonitor", "distinfer-dcgm-exporter"),
    ]
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert_valid(monitor, KUBE_MINOR)
    rs = _load(rendered / "rayservice.yaml")
    templates = _pod_templates(rs)
    head, worker, dcgm = monitors
    for monitor, node_type, pods in ((head, "head", templates[:1]), (worker, "worker", templates[1:])):
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [rs["metadata"]["namespace"]]}
        assert spec["selector"]["matchLabels"]["ray.io/node-type"] == node_type  # KubeRay's own label
        for pod in pods:
            labels = pod["metadata"]["labels"]
            assert all(
                labels.get(k) == v
                for k, v in spec["selector"]["matchLabels"].items()
                if k != "ray.io/node-type"
            )
            ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
            (endpoint,) = spec["podMetricsEndpoints"]
            assert ports[endpoint["port"]] == 8080
        assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "host"} in endpoint[
            "relabelings"
        ]
    cluster = rs["spec"]["rayClusterConfig"]
    for params in [cluster["headGroupSpec"]["rayStartParams"]] + [
        g["rayStartParams"] for g in cluster["workerGroupSpecs"]
    ]:
        assert params["metrics-export-port"] == "8080"
    assert dcgm["spec"]["namespaceSelector"] == {"matchNames": ["gpu-operator"]}
    assert dcgm["spec"]["selector"] == {"matchLabels": {"app": "nvidia-dcgm-exporter"}}
    assert dcgm["spec"]["endpoints"][0]["port"] == "gpu-metrics"


def test_kube_prometheus_values_select_every_monitor_and_expose_prometheus_where_the_report_asks(
    rendered: Path,
) -> None:
    values = _load(rendered / "kube-prometheus-values.yaml")
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert values["prometheus"]["service"] == {"type": "NodePort", "nodePort": 30090}  # the plan's port
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert (sidecar["label"], sidecar["labelValue"], sidecar["searchNamespace"]) == (
        "grafana_dashboard",
        "1",
        "ALL",
    )
    assert values["crds"] == {"enabled": False}  # applied server-side by the role instead
    crds = (rendered / "crds.txt").read_text().split()
    version = yaml.safe_load((REPO_ROOT / "inventory/poweredge/group_vars/all/versions.yml").read_text())[
        "kube_prometheus_chart_version"
    ]
    assert len(crds) == 10 and all(f"/kube-prometheus-stack-{version}/" in url for url in crds)
    assert any(url.endswith("/crd-podmonitors.yaml") for url in crds)


def test_dashboards_are_sidecar_configmaps_of_the_generated_json(rendered: Path) -> None:
    from distinfer.dashboards.build import all_dashboards

    maps = _all(rendered / "dashboards.yaml")
    expected = all_dashboards()
    assert sorted(m["metadata"]["name"] for m in maps) == sorted(
        f"distinfer-dashboard-{uid}" for uid in expected
    )
    for configmap in maps:
        kubernetes_validate.validate(configmap, KUBE_MINOR, strict=True)
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = configmap["data"].items()
        assert json.loads(text) == expected[key.removesuffix(".json")]
    for name in ("monitoring-namespace.yaml", "grafana-secret.yaml"):
        kubernetes_validate.validate(_load(rendered / name), KUBE_MINOR, strict=True)
    assert _load(rendered / "grafana-secret.yaml")["stringData"]["admin-password"] == "REDACTED"
