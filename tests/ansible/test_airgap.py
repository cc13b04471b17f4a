"""Air-gapped for real (`distinfer_airgap`, docs/airgap.md): inventory/poweredge as shipped plus the switch,
with a bundle made by `distinfer airgap bundle` from a stand-in for the internet on 127.0.0.1
(tests/airgap_upstream.py).

- Rendered (ray_service, helm_releases render mode), every object names only the mirror and the
  bundle's files: each image on the mirror, each chart an archive of the bundle with no repository, each
  CRD a bundle file, no URL to anywhere else, the chat page installing nothing, the model weights only
  from the cache (HF_HUB_OFFLINE).
- `site.yml --check --diff -vvv --tags k3s,helm` (preflight for real, the K3s and Helm roles in check
  mode on this machine): preflight takes the bundle; every task that runs names no outside address in
  its arguments or results; K3s gets registries.yaml sending every registry to the mirror and never
  falling back to the registries themselves; the K3s and Helm files are copied from the bundle.
- preflight refuses a bundle with a missing and a corrupted piece before any change, naming both.
- The addresses the bundle is made from are the roles' own (what they fetch when online).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from helpers import REPO_ROOT, Render, Run, poweredge_inventory, render_roles, run_playbook, write_inventory

from airgap_upstream import SOURCES, VERSIONS, upstream

MIRROR = "mirror.airgap.test:5000"
REGISTRY_CONFIG = {"tls": {"ca_file": "/etc/ssl/certs/mirror-ca.pem"}}
# Addresses a task may name: the mirror, the inventory's hosts (the endpoint the benchmark loads), the
# cluster's own services, this machine.
ALLOWED_HOSTS = {MIRROR.partition(":")[0], "xe9680", "xe8545", "r760xa", "127.0.0.1", "localhost"}
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://([^/\s\"'<>:\\]+)")
# An image named on a registry itself (not under <mirror>/), e.g. quay.io/kuberay/operator:v1.4.2.
UPSTREAM_IMAGE = re.compile(r"(?<![\w./:-])((?:[a-z0-9-]+\.)+[a-z]{2,}(?::\d+)?/[\w./-]+[:@][\w.:-]+)")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("airgap")
    with upstream(folder) as up:
        run = up.bundle(folder / "bundle")
    assert run.returncode == 0, run.stdout + run.stderr
    return folder / "bundle"


def _airgapped(bundle: Path) -> dict[str, Any]:
    inventory = poweredge_inventory()
    inventory["all"]["vars"]["distinfer_airgap"] = {
        "enabled": True,
        "bundle_dir": str(bundle),
        "registry_mirror": MIRROR,
        "registry_config": REGISTRY_CONFIG,
    }
    return inventory


@pytest.fixture(scope="module")
def airgap_render(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Render:
    return render_roles(
        tmp_path_factory.mktemp("render"),
        _airgapped(bundle),
        ("addons", "ray_service", "monitoring"),
        extra_args=("-vvv",),
    )


def outside_addresses(text: str) -> list[str]:
    """URLs to a host not allowed, and images named on a registry instead of the mirror."""
    urls = [m[0] for m in URL.finditer(text) if m[1] not in ALLOWED_HOSTS and not m[1].endswith(".svc")]
    images = [m[1] for m in UPSTREAM_IMAGE.finditer(text) if not m[1].startswith(f"{MIRROR}/")]
    return sorted(set(urls + images))


# Tool chatter a task result carries (a build's deprecation notice with its documentation link): text
# printed, not an address any task uses.
CHATTER = ("stderr", "stderr_lines", "warnings", "deprecations")


def task_results(output: str) -> list[dict[str, Any]]:
    """Every task result `-vvv` prints (`<host> => {JSON}`): its module_args (invocation), return values,
    facts and messages."""
    decoder, results = json.JSONDecoder(), []
    for match in re.finditer(r"[\])] => \{", output):
        result, _ = decoder.raw_decode(output, match.end() - 1)
        results.append(result)
    return results


def outside_addresses_of_tasks(output: str) -> tuple[int, list[str]]:
    """How many task results carry their module_args, and the outside addresses any result names."""
    results = task_results(output)
    with_args = sum(1 for r in results if "module_args" in r.get("invocation", {}))
    names = [outside_addresses(json.dumps({k: v for k, v in r.items() if k not in CHATTER})) for r in results]
    return with_args, sorted({a for found in names for a in found})


def _images(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "image" and isinstance(v, str)]
        return found + [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_the_scan_finds_outside_addresses() -> None:
    """The scan is real: each kind of outside address it must catch, and what it must let through."""
    assert outside_addresses("url: https://raw.githubusercontent.com/x") == [
        "https://raw.githubusercontent.com"
    ]
    assert outside_addresses("image: quay.io/kuberay/operator:v1.4.2") == ["quay.io/kuberay/operator:v1.4.2"]
    allowed = f"image: {MIRROR}/docker.io/rayproject/ray:2.60.0 http://xe9680:30800/v1 http://a.b.svc:8000"
    assert outside_addresses(allowed) == []
    run = 'ok: [h] => {"invocation": {"module_args": {"url": "https://get.helm.sh/x"}}, "stderr": "see https://a.io"}'
    assert outside_addresses_of_tasks(run) == (1, ["https://get.helm.sh"])


def test_every_rendered_object_names_only_the_mirror_and_the_bundle(
    airgap_render: Render, bundle: Path
) -> None:
    out = airgap_render.out
    images: list[str] = []
    for path in sorted(out.iterdir()):
        text = path.read_text()
        assert outside_addresses(text) == [], path.name
        if path.suffix == ".yaml":
            images += _images(_docs(path))
    # The RayService's head and worker groups, the edge, the chat page: all on the mirror.
    assert len(images) >= 5 and all(i.startswith(f"{MIRROR}/") for i in images), images
    assert f"{MIRROR}/docker.io/{VERSIONS['ray_service_images']['nvidia']}" in images
    for release in ("gpu_operator", "kuberay_operator", "kube_prometheus"):
        (install,) = _docs(out / f"{release}-install.yaml")
        assert install["repo_url"] is None, release  # no Helm repository is added
        assert Path(install["chart_ref"]).parent == bundle / "charts" and Path(install["chart_ref"]).is_file()
        assert all(
            Path(crd).is_relative_to(bundle / "crds") and Path(crd).is_file() for crd in install["crds"]
        )
    (kuberay,) = _docs(out / "kuberay_operator-install.yaml")
    assert [Path(crd).name for crd in kuberay["crds"]] == [
        "ray.io_rayclusters.yaml",
        "ray.io_rayjobs.yaml",
        "ray.io_rayservices.yaml",
    ]
    crds = (out / "crds.txt").read_text().split()
    assert len(crds) == 10 and all(Path(crd).is_file() and str(bundle) in crd for crd in crds)


def test_the_pods_install_and_download_nothing(airgap_render: Render, bundle: Path) -> None:
    out = airgap_render.out
    deployment, _ = _docs(out / "chat.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    chat_image = yaml.safe_load((bundle / "manifest.json").read_text())["chat_image"]["name"]
    assert container["image"] == f"{MIRROR}/{chat_image}"  # Gradio inside (the bundle's Containerfile)
    assert "pip" not in container["args"][0] and container["args"][0].startswith(
        "exec python -m distinfer.cli chat"
    )
    (rayservice,) = _docs(out / "rayservice.yaml")
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
        assert env["HF_HUB_OFFLINE"] == "1"  # the weights from the model cache, put there by hand


def test_every_task_of_the_render_names_only_the_mirror_and_the_bundle(airgap_render: Render) -> None:
    """`-vvv`: the arguments (`module_args`) and results of every task that runs (the plan with the
    bundle's paths and the mirror, the edge's and dashboards' commands, the files written)."""
    output = airgap_render.output
    with_args, outside = outside_addresses_of_tasks(output)
    assert with_args >= 10 and "distinfer_plan" in output and f"{MIRROR}/" in output, with_args
    assert outside == []


def _hunks(output: str) -> list[dict[str, Any]]:
    """The YAML files --diff shows as written whole (a new file: every line added)."""
    hunks = []
    for block in re.findall(r"@@[^\n]*@@\n((?:\+[^\n]*\n)+)", output):
        try:
            data = yaml.safe_load("".join(line[1:] + "\n" for line in block.splitlines()))
        except yaml.YAMLError:
            continue
        if isinstance(data, dict):
            hunks.append(data)
    return hunks


@pytest.fixture(scope="module")
def cluster_check(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("check")
    inventory = write_inventory(folder / "inv", _airgapped(bundle))
    run = run_playbook(
        "site.yml",
        inventory,
        check=True,
        tags="k3s,helm",
        extra_vars={"k3s_server_kubeconfig_dest": str(folder / "kubeconfig")},
        extra_args=("--diff", "-vvv"),
        timeout=600,
    )
    assert run.returncode == 0, run.output[-4000:]
    return run


def test_k3s_pulls_every_image_through_the_mirror_only(cluster_check: Run) -> None:
    hunks = _hunks(cluster_check.output)
    registries = [h for h in hunks if "mirrors" in h]
    configs = [h for h in hunks if "node-name" in h]
    assert len(registries) == len(configs) == 3  # each of the three nodes
    endpoint = [f"https://{MIRROR}"]
    for written in registries:
        assert written["configs"] == {MIRROR: REGISTRY_CONFIG}
        mirrors = written["mirrors"]
        assert mirrors.pop(MIRROR) == {"endpoint": endpoint}
        assert sorted(mirrors) == ["docker.io", "ghcr.io", "nvcr.io", "quay.io", "registry.k8s.io"]
        for registry, mirror in mirrors.items():
            assert mirror == {"endpoint": endpoint, "rewrite": {"^(.*)$": f"{registry}/$1"}}
    assert all(config["disable-default-registry-endpoint"] is True for config in configs)


def test_the_k3s_and_helm_files_come_from_the_bundle_and_no_task_names_an_outside_address(
    cluster_check: Run, bundle: Path
) -> None:
    output = cluster_check.output
    for name in ("k3s", "install.sh", "k3s-airgap-images-amd64.tar.zst"):
        assert f"{bundle}/k3s/{name}" in output, name
    assert f"{bundle}/helm/helm-{VERSIONS['helm_version']}-linux-amd64.tar.gz" in output
    assert "Check the air-gap bundle" in output  # preflight took it
    with_args, outside = outside_addresses_of_tasks(output)
    assert with_args >= 10 and outside == [], with_args


def test_preflight_refuses_a_missing_and_a_corrupted_piece_before_any_change(
    bundle: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "bundle"
    shutil.copytree(bundle, broken)
    manifest = yaml.safe_load((broken / "manifest.json").read_text())
    missing = broken / manifest["charts"]["kuberay_operator"]
    missing.unlink()
    corrupted = broken / manifest["crds"]["kube_prometheus"][0]
    corrupted.write_text(
        corrupted.read_text().replace("CustomResourceDefinition", "CustomResourceDefinitiom")
    )
    run = run_playbook("playbooks/preflight.yml", write_inventory(tmp_path / "inv", _airgapped(broken)))
    assert run.returncode != 0 and run.total_changed() == 0, run.output[-3000:]
    for text in (
        f"{missing} is missing (listed in manifest.json)",
        f"{corrupted} is corrupted: sha256",
        "re-run `distinfer airgap bundle --out DIR` on a machine with internet",
    ):
        assert text in run.output, f"{text!r} missing from:\n{run.output[-3000:]}"


def test_the_bundles_addresses_are_the_roles_own() -> None:
    """files/airgap/sources.yml names what the roles download when online, at the same versions."""
    sources = yaml.safe_load(SOURCES.read_text())
    pins = {k: str(v) for k, v in VERSIONS.items() if isinstance(v, str)}

    def role(name: str) -> dict[str, Any]:
        return yaml.safe_load((REPO_ROOT / f"roles/{name}/defaults/main.yml").read_text())

    def render(template: str, **extra: str) -> str:
        return jinja2.Template(template).render(**pins, **extra)

    helm_releases = role("helm_releases")
    table = yaml.safe_load((REPO_ROOT / "roles/helm_releases/vars/main.yml").read_text())["helm_releases_all"]
    # The role's version knobs (helm_releases_<release>_chart_version, ..._version) at the pinned versions.
    knobs = {k: render(v) for k, v in helm_releases.items() if k.endswith("_version") and "{{" in str(v)}
    assert sorted(sources["charts"]) == sorted(table)
    for name, chart in sources["charts"].items():
        assert chart["repo"] == helm_releases[f"helm_releases_{name}_repo_url"], name
        assert chart["chart"] == table[name]["chart_ref"].rpartition("/")[2], name
        assert chart["version"].format(**pins) == render(table[name]["chart_version"], **knobs), name
    for name, crd in sources["crds"].items():
        base = render(helm_releases[f"helm_releases_{name}_crd_url"], **knobs)
        assert crd["base"].format(**pins) == base, name
        prefix = "ray.io_" if name == "kuberay_operator" else "crd-"
        assert crd["files"] == [
            f"{prefix}{plural}.yaml" for plural in helm_releases[f"helm_releases_{name}_crds"]
        ]
    server = role("k3s_server")
    assert sources["k3s"]["install.sh"].format(**pins) == render(
        server["k3s_server_install_script_url"], k3s_server_version=pins["k3s_version"]
    )
    assert sources["helm"].format(**pins) == render(role("helm")["helm_url"], helm_arch="amd64")
