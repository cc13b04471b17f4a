"""A stand-in for the internet `distinfer airgap bundle` gathers from: an HTTP server on 127.0.0.1
serving fake K3s, Helm, chart and CRD files at the paths of the shipped `files/airgap/sources.yml`
(its `https://<host>/` replaced by `http://127.0.0.1:<port>/<host>/`), each chart repository with an
`index.yaml` as Helm's are. The bundle command's real download, checksum and manifest code runs against it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import tarfile
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from distinfer.airgap import load_sources

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = REPO_ROOT / "files/airgap/sources.yml"
VERSIONS_FILE = REPO_ROOT / "inventory/poweredge/group_vars/all/versions.yml"
VERSIONS = yaml.safe_load(VERSIONS_FILE.read_text())

# Each release's chart: (appVersion, values, {subchart: (appVersion, values)}), in the shapes the real
# charts use: NVIDIA's {repository, image, version}, {registry, repository, tag} with the tag left to
# the (sub)chart's appVersion, a plain {repository, tag}.
CHARTS: dict[str, tuple[str, dict[str, Any], dict[str, tuple[str, dict[str, Any]]]]] = {
    "gpu_operator": (
        VERSIONS["gpu_operator_chart_version"],
        {
            "operator": {"repository": "nvcr.io/nvidia", "image": "gpu-operator", "version": ""},
            "dcgmExporter": {
                "repository": "nvcr.io/nvidia/k8s",
                "image": "dcgm-exporter",
                "version": "4.2.3",
            },
        },
        {
            "node-feature-discovery": (
                "v0.17.3",
                {"image": {"repository": "registry.k8s.io/nfd/nfd", "tag": ""}},
            )
        },
    ),
    "amd_device_plugin": (
        "1.31.0",
        {"image": {"repository": "rocm/k8s-device-plugin", "tag": "1.31.0.7"}},
        {},
    ),
    "kuberay_operator": (
        "v1.4.2",
        {"image": {"repository": "quay.io/kuberay/operator", "tag": "v1.4.2"}},
        {},
    ),
    "kube_prometheus": (
        "v0.79.2",
        {
            "prometheusOperator": {
                "image": {
                    "registry": "quay.io",
                    "repository": "prometheus-operator/prometheus-operator",
                    "tag": "",
                }
            },
            "alertmanager": {"image": "quay.io/prometheus/alertmanager:v0.28.0"},
        },
        {
            "grafana": (
                "11.4.0",
                {"image": {"registry": "docker.io", "repository": "grafana/grafana", "tag": ""}},
            )
        },
    ),
}
# What the bundle must list: the charts' images above (normalized) and the RayService's from versions.yml.
CHART_IMAGES = [
    f"nvcr.io/nvidia/gpu-operator:{VERSIONS['gpu_operator_chart_version']}",
    "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3",
    "registry.k8s.io/nfd/nfd:v0.17.3",
    "docker.io/rocm/k8s-device-plugin:1.31.0.7",
    "quay.io/kuberay/operator:v1.4.2",
    "quay.io/prometheus-operator/prometheus-operator:v0.79.2",
    "quay.io/prometheus/alertmanager:v0.28.0",
    "docker.io/grafana/grafana:11.4.0",
]


@dataclasses.dataclass
class Upstream:
    base: str  # http://127.0.0.1:<port>/
    sources: Path  # the shipped sources file, pointed at this server
    served: dict[str, bytes]  # URL -> what it answers

    def bundle(self, out: Path, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`distinfer airgap bundle` as a user runs it (from the repository root, default versions and
        lock file), only --sources pointed here."""
        return subprocess.run(
            [
                str(REPO_ROOT / ".venv/bin/distinfer"),
                "airgap",
                "bundle",
                "--out",
                str(out),
                "--sources",
                str(self.sources),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )


def chart_archive(
    chart: str,
    version: str,
    app_version: str,
    values: dict[str, Any],
    subcharts: dict[str, tuple[str, dict[str, Any]]],
    packed: bool = False,
) -> bytes:
    """A chart as `helm package` makes it; its subcharts as folders, or `packed` as archives in charts/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, data: dict[str, Any] | bytes) -> None:
            body = data if isinstance(data, bytes) else yaml.safe_dump(data).encode()
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))

        add(
            f"{chart}/Chart.yaml",
            {"apiVersion": "v2", "name": chart, "version": version, "appVersion": app_version},
        )
        add(f"{chart}/values.yaml", values)
        for sub, (sub_app, sub_values) in subcharts.items():
            if packed:
                add(f"{chart}/charts/{sub}-1.0.0.tgz", chart_archive(sub, "1.0.0", sub_app, sub_values, {}))
                continue
            add(f"{chart}/charts/{sub}/Chart.yaml", {"name": sub, "version": "1.0.0", "appVersion": sub_app})
            add(f"{chart}/charts/{sub}/values.yaml", sub_values)
    return buffer.getvalue()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def upstream(folder: Path) -> Iterator[Upstream]:
    root = folder / "www"
    root.mkdir(parents=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    sources = folder / "sources.yml"
    sources.write_text(SOURCES.read_text().replace("https://", base))
    loaded = load_sources(sources, {k: str(v) for k, v in VERSIONS.items() if isinstance(v, str)})
    served: dict[str, bytes] = {}

    def put(url: str, body: bytes) -> None:
        path = root / urllib.parse.unquote(url.removeprefix(base))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        served[url] = body

    for name, url in loaded.k3s.items():
        put(url, f"fake {name} of K3s {VERSIONS['k3s_version']}\n".encode() * 50)
    put(loaded.helm, b"fake helm tarball " + VERSIONS["helm_version"].encode())
    for release, source in loaded.charts.items():
        app_version, values, subcharts = CHARTS[release]
        # kube-prometheus-stack's subcharts packed as archives, the GPU Operator's as folders.
        archive = chart_archive(
            source.chart, source.version, app_version, values, subcharts, packed=release == "kube_prometheus"
        )
        name = f"{source.chart}-{source.version}.tgz"
        # One repository names its archives absolutely (as prometheus-community's does), others relatively.
        url = f"{base}releases/{name}" if release == "kube_prometheus" else name
        put(urllib.parse.urljoin(source.repo.rstrip("/") + "/", url), archive)
        entry = {"version": source.version, "urls": [url], "digest": hashlib.sha256(archive).hexdigest()}
        index = {"apiVersion": "v1", "entries": {source.chart: [{**entry, "version": "0.0.1"}, entry]}}
        put(source.repo.rstrip("/") + "/index.yaml", yaml.safe_dump(index).encode())
    for release, crd in loaded.crds.items():
        for name in crd.files:
            put(
                f"{crd.base.rstrip('/')}/{name}",
                f"# {release} CRD {name}\nkind: CustomResourceDefinition\n".encode(),
            )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Upstream(base, sources, served)
    finally:
        server.shutdown()
        server.server_close()
