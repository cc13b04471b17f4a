"""Air gap: the bundle that carries everything the cluster would fetch, and the settings that use it.

`distinfer airgap bundle --out DIR` runs on a machine with internet. From the addresses in one file
(`files/airgap/sources.yml`, placeholders filled from the inventory's `versions.yml`) it downloads the
K3s and Helm air-gap files, every Helm chart at its pinned version (through the repository's
`index.yaml`, as `helm pull` does, checked against the index's digest) and the CRDs the roles apply,
lists every container image (the RayService's from `versions.yml`, the charts' from their pinned
values, the chat page's image built from the Containerfile it writes) and writes `manifest.json`: a
sha256 for every file, the versions it was made for, where each piece lies.

With `distinfer_airgap.enabled` in the inventory (`AirgapSettings`), the plan (`distinfer plan`) points
the roles at the bundle's files and at the registry mirror (`airgap_plan`), and preflight runs
`distinfer airgap verify`: every listed file present with its sha256, made for the pinned versions,
every image from a registry the mirror stands in for, before anything changes. docs/airgap.md.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml
from pydantic import Field, ValidationError, field_validator

from distinfer.config import ConfigError
from distinfer.errors import format_validation_error
from distinfer.results.base import Strict

MANIFEST = "manifest.json"
IMAGES_FILE = "images.txt"
FORMAT = 1
# Registries the mirror stands in for by default (K3s registries.yaml `mirrors`): where the charts'
# and the RayService's images come from.
DEFAULT_MIRRORED = ["docker.io", "nvcr.io", "quay.io", "registry.k8s.io", "ghcr.io"]
# The versions a bundle is made for (inventory/poweredge/group_vars/all/versions.yml).
VERSION_KEYS = (
    "k3s_version",
    "helm_version",
    "gpu_operator_chart_version",
    "amd_device_plugin_chart_version",
    "kuberay_operator_version",
    "kube_prometheus_chart_version",
)
# The K3s air-gap files (what k3s_server_airgap_dir / k3s_agent_airgap_dir hold).
K3S_FILES = ("k3s", "install.sh", "k3s-airgap-images-amd64.tar.zst")
REMAKE = "re-run `distinfer airgap bundle --out DIR` on a machine with internet and copy DIR here"
_HOST_PORT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")


# ---- the inventory's switch ------------------------------------------------------------------------


class AirgapSettings(Strict):
    """`distinfer_airgap` in the inventory (its `registry_config`, which may hold credentials, never
    reaches Python: the K3s roles write it straight into registries.yaml)."""

    enabled: bool = Field(False, description="Take everything from the bundle and the mirror.")
    bundle_dir: str = Field("", description="The bundle's folder on the control machine, absolute.")
    registry_mirror: str = Field("", description="The registry mirror, host:port (no scheme, no path).")
    registry_scheme: Literal["https", "http"] = Field("https", description="How the nodes reach it.")
    mirrored_registries: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MIRRORED),
        description="Registries whose images the mirror holds (under <mirror>/<registry>/...).",
    )

    @field_validator("registry_mirror")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value and not _HOST_PORT.match(value):
            raise ValueError(
                f"registry_mirror must be host or host:port, without scheme or path (got {value!r}); "
                "e.g. registry.example.internal:5000, and registry_scheme: http for a mirror without TLS"
            )
        return value

    def check_enabled(self) -> None:
        """What an enabled switch needs, named with its fix."""
        if not self.enabled:
            return
        if not self.bundle_dir or not Path(self.bundle_dir).is_absolute():
            raise ConfigError(
                f"distinfer_airgap.bundle_dir is {self.bundle_dir!r}; set it to the absolute path of the "
                "folder `distinfer airgap bundle --out DIR` wrote, on the control machine"
            )
        if not self.registry_mirror:
            raise ConfigError(
                "distinfer_airgap.registry_mirror is empty; set it to the registry mirror the nodes pull "
                "every image from (host:port), loaded with the bundle's images.txt (docs/airgap.md)"
            )


def parse_settings(data: Any, source: str = "distinfer_airgap") -> AirgapSettings:
    try:
        settings = AirgapSettings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, "valid air-gap settings", data=data)) from None
    settings.check_enabled()
    return settings


# ---- the bundle's manifest -------------------------------------------------------------------------


class BundleFile(Strict):
    sha256: str
    size: int
    source: str = Field(description="Where it was downloaded from, or `generated`.")


class ChatImage(Strict):
    name: str = Field(description="The image, as pushed under the mirror (<mirror>/<name>).")
    base: str = Field(description="The Ray image it is built from (normalized).")
    gradio: str = Field(description="The pinned Gradio it carries (requirements.lock).")
    containerfile: str = Field(description="Its Containerfile in the bundle.")


class Manifest(Strict):
    format: int = FORMAT
    versions: dict[str, str]
    files: dict[str, BundleFile] = Field(description="Every file but this one, by path in the bundle.")
    charts: dict[str, str] = Field(description="Release (helm_releases) -> chart archive.")
    crds: dict[str, list[str]] = Field(description="Release -> CRD files, applied in this order.")
    k3s_dir: str = Field(description="Folder with k3s, install.sh, k3s-airgap-images-amd64.tar.zst.")
    helm_archive: str
    images: list[str] = Field(description="Every image the cluster pulls, normalized (registry/path:tag).")
    chat_image: ChatImage


def read_manifest(bundle: Path) -> Manifest:
    path = bundle / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except OSError:
        raise ConfigError(f"{path} is missing: {bundle} is not an air-gap bundle; {REMAKE}") from None
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, str(path), "a manifest this distinfer reads") + f"\n{REMAKE}"
        ) from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(bundle: Path, versions: dict[str, str], mirrored: list[str]) -> Manifest:
    """The bundle as preflight takes it: every problem at once, each with the file and the fix."""
    manifest = read_manifest(bundle)
    problems = []
    for key in VERSION_KEYS:
        want, have = versions.get(key), manifest.versions.get(key)
        if want is not None and want != have:
            problems.append(f"made for {key} {have!r}, but the inventory pins {want!r} (versions.yml)")
    for name, entry in sorted(manifest.files.items()):
        path = bundle / name
        if not path.is_file():
            problems.append(f"{path} is missing (listed in {MANIFEST})")
        elif (found := sha256_of(path)) != entry.sha256:
            problems.append(f"{path} is corrupted: sha256 {found}, {MANIFEST} says {entry.sha256}")
    listed = set(manifest.files)
    pieces = [*manifest.charts.values(), *(f for files in manifest.crds.values() for f in files)]
    pieces += [manifest.helm_archive, manifest.chat_image.containerfile]
    pieces += [f"{manifest.k3s_dir}/{name}" for name in K3S_FILES]
    problems += [
        f"{MANIFEST} names {piece} but lists no checksum for it" for piece in pieces if piece not in listed
    ]
    outside = sorted({i for i in manifest.images if registry_of(i) not in mirrored})
    if outside:
        problems.append(
            f"images from registries the mirror does not stand in for: {', '.join(outside)}; add their "
            "registries to distinfer_airgap.mirrored_registries (and the images to the mirror)"
        )
    if problems:
        raise ConfigError(
            f"the air-gap bundle {bundle} cannot be used:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + f"\nfix: {REMAKE}"
        )
    return manifest


# ---- image names -----------------------------------------------------------------------------------


def normalize(image: str) -> str:
    """`rayproject/ray:2` -> `docker.io/rayproject/ray:2`, as containerd names it."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if rest else f"docker.io/library/{image}"


def registry_of(image: str) -> str:
    return normalize(image).partition("/")[0]


def on_mirror(image: str, mirror: str) -> str:
    """Where the mirror holds an image: <mirror>/<registry>/<path>:<tag> (what images.txt's copy
    loop in docs/airgap.md pushes, and what registries.yaml's rewrites ask for)."""
    return f"{mirror}/{normalize(image)}"


def registries_mirrors(settings: AirgapSettings) -> dict[str, Any]:
    """K3s registries.yaml `mirrors`: each mirrored registry through the mirror, its path rewritten under
    the registry's name; the mirror itself, for the images named on it (the RayService's)."""
    endpoint = [f"{settings.registry_scheme}://{settings.registry_mirror}"]
    mirrors: dict[str, Any] = {
        registry: {"endpoint": endpoint, "rewrite": {"^(.*)$": f"{registry}/$1"}}
        for registry in settings.mirrored_registries
    }
    mirrors[settings.registry_mirror] = {"endpoint": endpoint}
    return mirrors


class AirgapPlan(Strict):
    """What the roles take from the bundle and the mirror (`distinfer_plan.airgap`)."""

    bundle_dir: str
    registry_mirror: str
    registries: dict[str, Any] = Field(description="K3s registries.yaml `mirrors`.")
    images: dict[str, str] = Field(description="ray_service_images, as the mirror holds them.")
    chat_image: str = Field(description="The chat page's image (Gradio inside), on the mirror.")
    charts: dict[str, str] = Field(description="Release -> chart archive (absolute).")
    crds: dict[str, list[str]] = Field(description="Release -> CRD files (absolute).")
    k3s_dir: str
    helm_archive: str


def airgap_plan(settings: AirgapSettings, images: dict[str, str]) -> AirgapPlan:
    bundle = Path(settings.bundle_dir)
    manifest = read_manifest(bundle)
    mirror = settings.registry_mirror
    return AirgapPlan(
        bundle_dir=str(bundle),
        registry_mirror=mirror,
        registries=registries_mirrors(settings),
        images={vendor: on_mirror(image, mirror) for vendor, image in images.items()},
        chat_image=f"{mirror}/{manifest.chat_image.name}",
        charts={name: str(bundle / path) for name, path in manifest.charts.items()},
        crds={name: [str(bundle / p) for p in paths] for name, paths in manifest.crds.items()},
        k3s_dir=str(bundle / manifest.k3s_dir),
        helm_archive=str(bundle / manifest.helm_archive),
    )


# ---- making the bundle -----------------------------------------------------------------------------


class ChartSource(Strict):
    repo: str
    chart: str
    version: str


class CrdSource(Strict):
    base: str
    files: list[str]


class Sources(Strict):
    """files/airgap/sources.yml: every address the bundle is gathered from ({name} = versions.yml)."""

    k3s: dict[str, str] = Field(description="k3s, install.sh, k3s-airgap-images-amd64.tar.zst -> URL.")
    helm: str
    charts: dict[str, ChartSource]
    crds: dict[str, CrdSource]
    extra_images: list[str] = Field(
        default_factory=list, description="Images no chart's values name (pulled at run time)."
    )


def load_sources(path: Path, versions: dict[str, str]) -> Sources:
    """The sources file with its {placeholders} filled from the versions (URL-quoted: `+` in K3s's)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}; pass --sources FILE") from None
    quoted = {k: urllib.parse.quote(str(v), safe="") for k, v in versions.items()}

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            try:
                return node.format(**quoted)
            except KeyError as err:
                raise ConfigError(f"{path}: {node!r} names {err}, which the versions file lacks") from None
        if isinstance(node, list):
            return [fill(n) for n in node]
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return node

    try:
        sources = Sources.model_validate(fill(raw))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path), "a sources file", data=raw)) from None
    missing = sorted(set(K3S_FILES) - set(sources.k3s))
    if missing:
        raise ConfigError(f"{path}: k3s lacks {', '.join(missing)}")
    return sources


def _fetch(url: str, dest: Path) -> tuple[str, int]:
    """Download to dest (written beside it, then renamed); its sha256 and size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=120) as answer, part.open("wb") as out:
            for block in iter(lambda: answer.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
                out.write(block)
    except (urllib.error.URLError, OSError) as err:
        part.unlink(missing_ok=True)
        raise ConfigError(f"cannot download {url}: {getattr(err, 'reason', err)}") from None
    part.replace(dest)
    return digest.hexdigest(), size


def _read_url(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=120) as answer:
            data: bytes = answer.read()
            return data
    except (urllib.error.URLError, OSError) as err:
        raise ConfigError(f"cannot download {url}: {getattr(err, 'reason', err)}") from None


def chart_url(source: ChartSource) -> tuple[str, str]:
    """The chart archive's URL and digest from the repository's index.yaml (what `helm pull` reads)."""
    index_url = source.repo.rstrip("/") + "/index.yaml"
    index = yaml.safe_load(_read_url(index_url)) or {}
    for entry in (index.get("entries") or {}).get(source.chart) or []:
        if str(entry.get("version")) == source.version and entry.get("urls"):
            url = urllib.parse.urljoin(source.repo.rstrip("/") + "/", entry["urls"][0])
            return url, str(entry.get("digest") or "")
    raise ConfigError(
        f"{index_url} has no {source.chart} {source.version}; check the version in versions.yml"
    )


def _walk_images(node: Any, app_version: str) -> Iterator[str]:
    """Image references in a chart's values: {registry, repository, image, tag|version} maps (a tag left
    empty means the chart's appVersion) and `image: name:tag` strings."""
    if isinstance(node, dict):
        repo = node.get("repository")
        if isinstance(repo, str) and repo and any(k in node for k in ("tag", "version", "image")):
            name = "/".join(str(p).strip("/") for p in (node.get("registry"), repo, node.get("image")) if p)
            tag = str(node.get("tag") or node.get("version") or app_version or "")
            if tag:
                yield f"{name}:{tag}" if not tag.startswith("sha256:") else f"{name}@{tag}"
        for key, value in node.items():
            if key == "image" and isinstance(value, str) and re.match(r"^[\w./-]+:[\w.-]+$", value):
                yield value
            else:
                yield from _walk_images(value, app_version)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_images(item, app_version)


def chart_images(archive: Path) -> list[str]:
    """Every image the chart's pinned values name, and its subcharts' (folders or archives in charts/)."""
    with tarfile.open(archive) as tar:
        return sorted(_tar_images(tar))


def _tar_images(tar: tarfile.TarFile) -> set[str]:
    found: set[str] = set()
    names = tar.getnames()
    for name in names:
        if name.endswith(".tgz") and "/charts/" in name:
            with tarfile.open(fileobj=io.BytesIO(_member(tar, name))) as sub:
                found |= _tar_images(sub)
            continue
        folder = name.removesuffix("values.yaml")
        if not name.endswith("/values.yaml") or f"{folder}Chart.yaml" not in names:
            continue
        chart = yaml.safe_load(_member(tar, f"{folder}Chart.yaml")) or {}
        values = yaml.safe_load(_member(tar, name)) or {}
        found.update(normalize(i) for i in _walk_images(values, str(chart.get("appVersion") or "")))
    return found


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    handle = tar.extractfile(name)
    return handle.read() if handle else b""


def pinned(lock: Path, package: str) -> str:
    match = re.search(rf"(?m)^{re.escape(package)}==(\S+)$", lock.read_text())
    if not match:
        raise ConfigError(f"{lock} pins no {package}; pass --lock with the project's requirements.lock")
    return match[1]


def make_bundle(
    out: Path, sources: Sources, versions: dict[str, str], ray_images: dict[str, str], gradio: str
) -> Manifest:
    """Gather every piece into `out` and write its manifest (the manifest last: a bundle cut off half
    way has none, and preflight refuses it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    files: dict[str, BundleFile] = {}

    def fetch(url: str, rel: str, digest: str = "") -> str:
        sha, size = _fetch(url, out / rel)
        if digest and digest != sha:
            (out / rel).unlink()
            raise ConfigError(f"{url}: sha256 {sha}, but its repository's index says {digest}; try again")
        files[rel] = BundleFile(sha256=sha, size=size, source=url)
        typer.echo(f"{rel}  {sha}", err=True)
        return rel

    def generated(rel: str, text: str) -> str:
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        files[rel] = BundleFile(sha256=sha256_of(path), size=path.stat().st_size, source="generated")
        return rel

    for name in K3S_FILES:
        fetch(sources.k3s[name], f"k3s/{name}")
    helm_archive = fetch(sources.helm, f"helm/{Path(urllib.parse.urlparse(sources.helm).path).name}")
    charts: dict[str, str] = {}
    images = {normalize(i) for i in [*ray_images.values(), *sources.extra_images]}
    for release, chart in sources.charts.items():
        url, digest = chart_url(chart)
        charts[release] = fetch(url, f"charts/{chart.chart}-{chart.version}.tgz", digest)
        images.update(chart_images(out / charts[release]))
    crds = {
        release: [fetch(f"{crd.base.rstrip('/')}/{name}", f"crds/{release}/{name}") for name in crd.files]
        for release, crd in sources.crds.items()
    }
    base = normalize(ray_images["none"])
    tag = base.rpartition(":")[2] if ":" in base.rpartition("/")[2] else "latest"
    chat = ChatImage(
        name=f"distinfer/chat:{tag}-gradio{gradio}",
        base=base,
        gradio=gradio,
        containerfile=generated(
            "chat/Containerfile",
            "# The chat page's image (roles/ray_service/templates/chat.yaml.j2 under air gap): the Ray\n"
            "# image with the pinned Gradio, so the pod installs nothing when it starts. docs/airgap.md.\n"
            f"FROM {base}\nRUN pip install --no-cache-dir gradio=={gradio}\n",
        ),
    )
    generated(IMAGES_FILE, "".join(f"{image}\n" for image in sorted(images)))
    manifest = Manifest(
        versions={k: versions[k] for k in VERSION_KEYS if k in versions},
        files=files,
        charts=charts,
        crds=crds,
        k3s_dir="k3s",
        helm_archive=helm_archive,
        images=sorted(images),
        chat_image=chat,
    )
    (out / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


# ---- the commands ----------------------------------------------------------------------------------


def _versions(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(
            f"cannot read {path}: {err.strerror}; run from the repository root or pass --versions FILE"
        ) from None
    missing = [k for k in VERSION_KEYS if k not in data]
    images = data.get("ray_service_images") or {}
    if missing or "none" not in images:
        raise ConfigError(f"{path} lacks {', '.join(missing or ['ray_service_images.none'])}")
    return {k: str(data[k]) for k in VERSION_KEYS}, {k: str(v) for k, v in images.items()}


def bundle_command(
    out: Annotated[Path, typer.Option(help="Folder to write the bundle to (made if missing).")],
    versions: Annotated[Path, typer.Option(help="The inventory's pinned versions.")] = Path(
        "inventory/poweredge/group_vars/all/versions.yml"
    ),
    sources: Annotated[Path, typer.Option(help="Where each piece is downloaded from.")] = Path(
        "files/airgap/sources.yml"
    ),
    lock: Annotated[Path, typer.Option(help="Pins the chat image's Gradio.")] = Path("requirements.lock"),
) -> None:
    """Gather what an air-gapped cluster needs into one folder, with a sha256 for every file.

    Run on a machine with internet, from the repository root; then copy the folder to the control
    machine, load images.txt into the registry mirror and set distinfer_airgap (docs/airgap.md).
    """
    pins, ray_images = _versions(versions)
    manifest = make_bundle(out, load_sources(sources, pins), pins, ray_images, pinned(lock, "gradio"))
    typer.echo(
        f"{out}: {len(manifest.files)} files in {MANIFEST}, {len(manifest.images)} images in {IMAGES_FILE}; "
        f"build {manifest.chat_image.name} from {manifest.chat_image.containerfile} (docs/airgap.md)"
    )


class VerifyRequest(Strict):
    airgap: dict[str, Any]
    versions: dict[str, str] = Field(default_factory=dict)


def verify_command(
    request: Annotated[
        str, typer.Option("--request", help="JSON {airgap, versions}; - = standard input.")
    ] = "-",
) -> None:
    """Check an air-gap bundle as preflight does: manifest, every file's sha256, versions, registries."""
    text = sys.stdin.read() if request == "-" else Path(request).read_text()
    try:
        parsed = VerifyRequest.model_validate_json(text)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "the verify request", "a valid request")) from None
    settings = parse_settings(parsed.airgap)
    if not settings.enabled:
        return
    manifest = verify(Path(settings.bundle_dir), parsed.versions, settings.mirrored_registries)
    typer.echo(f"{settings.bundle_dir}: {len(manifest.files)} files checked, made for the pinned versions")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Air gap: gather the bundle, check it (docs/airgap.md).", no_args_is_help=True)
    group.command("bundle")(bundle_command)
    group.command("verify")(verify_command)
    app.add_typer(group, name="airgap")
