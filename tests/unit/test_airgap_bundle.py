"""`distinfer airgap`: the bundle gathered from a local stand-in for the internet (tests/airgap_upstream.py)
with a sha256 per file in its manifest, the check preflight runs refusing a missing, corrupted or
outdated piece with the file and the fix named, and the plan's air gap (registries.yaml mirrors,
images on the mirror)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from airgap_upstream import CHART_IMAGES, REPO_ROOT, VERSIONS, upstream
from distinfer.airgap import VERSION_KEYS, Manifest, chart_url, load_sources, normalize, on_mirror, verify
from distinfer.config import ConfigError
from distinfer.plan import PlanRequest, build_plan, load_request

PINS = {k: VERSIONS[k] for k in VERSION_KEYS}
MIRRORED = ["docker.io", "nvcr.io", "quay.io", "registry.k8s.io", "ghcr.io"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes], str]:
    folder = tmp_path_factory.mktemp("airgap")
    with upstream(folder) as up:
        run = up.bundle(folder / "bundle")
        assert run.returncode == 0, run.stdout + run.stderr
        return folder / "bundle", up.served, run.stdout


def _manifest(bundle: Path) -> Manifest:
    return Manifest.model_validate_json((bundle / "manifest.json").read_text())


def test_the_bundle_holds_every_piece_with_its_sha256(made: tuple[Path, dict[str, bytes], str]) -> None:
    bundle, served, stdout = made
    manifest = _manifest(bundle)
    assert manifest.versions == PINS
    downloaded = {name: entry for name, entry in manifest.files.items() if entry.source != "generated"}
    # Every file the stand-in served but the repositories' indexes, each byte for byte, its checksum right.
    assert sorted(e.source for e in downloaded.values()) == sorted(
        u for u in served if not u.endswith("index.yaml")
    )
    for name, entry in manifest.files.items():
        data = (bundle / name).read_bytes()
        assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.size == len(data), name
        if entry.source != "generated":
            assert data == served[entry.source], name
    assert sorted(manifest.charts) == [
        "amd_device_plugin",
        "gpu_operator",
        "kube_prometheus",
        "kuberay_operator",
    ]
    assert (
        manifest.charts["kuberay_operator"]
        == f"charts/kuberay-operator-{PINS['kuberay_operator_version']}.tgz"
    )
    assert [Path(p).name for p in manifest.crds["kuberay_operator"]] == [
        "ray.io_rayclusters.yaml",
        "ray.io_rayjobs.yaml",
        "ray.io_rayservices.yaml",
    ]
    assert len(manifest.crds["kube_prometheus"]) == 10
    assert sorted((bundle / manifest.k3s_dir).iterdir()) == sorted(
        bundle / "k3s" / n for n in ("k3s", "install.sh", "k3s-airgap-images-amd64.tar.zst")
    )
    assert manifest.helm_archive == f"helm/helm-{PINS['helm_version']}-linux-amd64.tar.gz"
    assert "images.txt" in stdout and "Containerfile" in stdout
    assert not list(bundle.rglob("*.part"))


def test_the_bundle_lists_every_image_and_the_chat_images_recipe(
    made: tuple[Path, dict[str, bytes], str],
) -> None:
    bundle, _, _ = made
    manifest = _manifest(bundle)
    ray = [normalize(image) for image in VERSIONS["ray_service_images"].values()]
    assert manifest.images == sorted({*CHART_IMAGES, *ray})
    assert (bundle / "images.txt").read_text().split() == manifest.images
    (gradio,) = [
        line for line in (REPO_ROOT / "requirements.lock").read_text().split() if line.startswith("gradio==")
    ]
    chat = manifest.chat_image
    base = normalize(VERSIONS["ray_service_images"]["none"])
    assert chat.base == base and f"gradio=={chat.gradio}" == gradio
    assert chat.name == f"distinfer/chat:{base.rpartition(':')[2]}-gradio{chat.gradio}"
    text = (bundle / chat.containerfile).read_text()
    assert f"FROM {base}\n" in text and f"pip install --no-cache-dir {gradio}\n" in text


def test_verify_passes_the_bundle_as_made(made: tuple[Path, dict[str, bytes], str]) -> None:
    bundle, _, _ = made
    assert verify(bundle, PINS, MIRRORED) == _manifest(bundle)


def _broken(made: tuple[Path, dict[str, bytes], str], tmp_path: Path) -> tuple[Path, Manifest]:
    copy = tmp_path / "bundle"
    shutil.copytree(made[0], copy)
    return copy, _manifest(copy)


def test_verify_refuses_a_missing_piece_naming_it_and_the_fix(
    made: tuple[Path, dict[str, bytes], str], tmp_path: Path
) -> None:
    bundle, manifest = _broken(made, tmp_path)
    (bundle / manifest.charts["gpu_operator"]).unlink()
    with pytest.raises(ConfigError) as err:
        verify(bundle, PINS, MIRRORED)
    message = str(err.value)
    assert f"{bundle / manifest.charts['gpu_operator']} is missing (listed in manifest.json)" in message
    assert "re-run `distinfer airgap bundle --out DIR` on a machine with internet" in message


def test_verify_refuses_a_corrupted_piece_with_both_checksums(
    made: tuple[Path, dict[str, bytes], str], tmp_path: Path
) -> None:
    bundle, manifest = _broken(made, tmp_path)
    crd = bundle / manifest.crds["kube_prometheus"][2]
    crd.write_bytes(crd.read_bytes() + b"#")
    with pytest.raises(ConfigError) as err:
        verify(bundle, PINS, MIRRORED)
    listed = manifest.files[manifest.crds["kube_prometheus"][2]].sha256
    found = hashlib.sha256(crd.read_bytes()).hexdigest()
    assert f"{crd} is corrupted: sha256 {found}, manifest.json says {listed}" in str(err.value)


def test_verify_refuses_no_manifest_other_versions_and_unmirrored_images(
    made: tuple[Path, dict[str, bytes], str], tmp_path: Path
) -> None:
    bundle, _ = _broken(made, tmp_path)
    newer = {**PINS, "kuberay_operator_version": "1.5.0"}
    with pytest.raises(
        ConfigError, match=r"made for kuberay_operator_version '1.4.2', but the inventory pins '1.5.0'"
    ):
        verify(bundle, newer, MIRRORED)
    with pytest.raises(ConfigError, match=r"docker.io/grafana/grafana:11.4.0.*mirrored_registries"):
        verify(bundle, PINS, [r for r in MIRRORED if r != "docker.io"])
    (bundle / "manifest.json").unlink()
    with pytest.raises(ConfigError, match=r"manifest.json is missing: .* is not an air-gap bundle; re-run"):
        verify(bundle, PINS, MIRRORED)


def test_a_download_whose_digest_differs_from_the_index_is_refused(tmp_path: Path) -> None:
    with upstream(tmp_path) as up:
        source = load_sources(up.sources, {k: str(v) for k, v in PINS.items()}).charts["kuberay_operator"]
        url, digest = chart_url(source)
        assert digest == hashlib.sha256(up.served[url]).hexdigest()
        index = tmp_path / "www" / source.repo.removeprefix(up.base) / "index.yaml"
        index.write_text(index.read_text().replace(digest, "f" * 64))
        run = up.bundle(tmp_path / "bundle")
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"{url}: sha256 {digest}, but its repository's index says {'f' * 64}" in run.stderr
    assert not (tmp_path / "bundle/manifest.json").exists()  # no manifest: preflight refuses it whole
    assert not (tmp_path / f"bundle/charts/{Path(url).name}").exists()


def _request(bundle: Path, platform: str = "kubernetes", **airgap: Any) -> dict[str, Any]:
    return {
        "platform": platform,
        "models_file": str(REPO_ROOT / "files/models/llama2-70b-tp4.yaml"),
        "hosts": [
            {"name": "xe9680", "address": "10.0.0.1", "gpus": 8, "gpu_vendor": "nvidia", "gpu_model": "a"}
        ],
        "head": "xe9680",
        "images": VERSIONS["ray_service_images"],
        "airgap": {
            "enabled": True,
            "bundle_dir": str(bundle),
            "registry_mirror": "mirror.test:5000",
            **airgap,
        },
    }


def test_the_plan_puts_every_image_on_the_mirror_and_writes_k3s_mirrors(
    made: tuple[Path, dict[str, bytes], str],
) -> None:
    bundle, _, _ = made
    plan = build_plan(PlanRequest.model_validate(_request(bundle)))
    airgap = plan.airgap
    assert airgap is not None
    assert airgap.images == {
        k: on_mirror(v, "mirror.test:5000") for k, v in VERSIONS["ray_service_images"].items()
    }
    assert airgap.images["none"] == f"mirror.test:5000/docker.io/{VERSIONS['ray_service_images']['none']}"
    assert airgap.chat_image == f"mirror.test:5000/{_manifest(bundle).chat_image.name}"
    assert airgap.registries["quay.io"] == {
        "endpoint": ["https://mirror.test:5000"],
        "rewrite": {"^(.*)$": "quay.io/$1"},
    }
    assert sorted(airgap.registries) == sorted([*MIRRORED, "mirror.test:5000"])
    assert all(Path(p).is_file() for p in airgap.charts.values())
    assert Path(airgap.helm_archive).is_file() and Path(airgap.k3s_dir, "k3s").is_file()
    off = _request(bundle)
    off["airgap"]["enabled"] = False
    assert build_plan(PlanRequest.model_validate(off)).airgap is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"registry_mirror": "https://mirror.test:5000"}, "registry_mirror must be host or host:port"),
        ({"registry_mirror": ""}, "distinfer_airgap.registry_mirror is empty"),
        ({"bundle_dir": "bundle"}, "distinfer_airgap.bundle_dir is 'bundle'; set it to the absolute path"),
        ({"bundle_dir": "/nonexistent"}, "/nonexistent/manifest.json is missing"),
        ({"registry_scheme": "ftp"}, "airgap.registry_scheme"),
    ],
)
def test_the_plan_refuses_a_bad_switch_naming_the_field(
    made: tuple[Path, dict[str, bytes], str], change: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        build_plan(load_request(json.dumps(_request(made[0], **change)), "request"))
    assert expected in str(err.value)


def test_the_plan_refuses_the_switch_on_the_local_platform(made: tuple[Path, dict[str, bytes], str]) -> None:
    with pytest.raises(ConfigError, match="distinfer_airgap is enabled on the local platform"):
        build_plan(PlanRequest.model_validate(_request(made[0], platform="local")))


def test_normalize_names_images_as_containerd_does() -> None:
    assert normalize("busybox:1") == "docker.io/library/busybox:1"
    assert normalize("rayproject/ray:2") == "docker.io/rayproject/ray:2"
    assert normalize("nvcr.io/nvidia/x:1") == "nvcr.io/nvidia/x:1"
    assert normalize("localhost/x:1") == "localhost/x:1"
    assert normalize("mirror:5000/x:1") == "mirror:5000/x:1"
