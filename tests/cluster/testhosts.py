"""Test hosts: systemd containers on this machine that Ansible reaches over SSH at their own IPs.

Each host is a podman container booting systemd (`/sbin/init`) from a Debian rootfs (bookworm unless
asked for another release: `RELEASES`) that debootstrap builds once per release and caches under
`<repo>/.cache/testhosts/`. The containers sit on a podman
network created with `--internal` (no route out); this machine reaches them because the network's
bridge is given the gateway address (podman's CNI backend leaves an internal bridge without one).
sshd inside accepts root by a key generated for the run; every host gets its own ed25519 host key,
generated here, so the run's known_hosts file is exact and host key checking stays on.

The repository (with its `.venv`) and the venv's Python installation are bind-mounted read-only at the
same absolute paths, so `distinfer` and `ray` run inside the hosts without installing anything.

Everything a run creates (containers, network) is recorded by ID and removed by `down()`, which also
runs at interpreter exit; nothing is ever removed by name pattern.

    with TestHosts(["node1", "node2", "node3"], workdir) as th:
        th.write_inventory(workdir / "hosts.yml", {"ray_head": ["node1"], "ray_workers": ["node2", "node3"]})

    with TestHosts(["node1"], workdir, release="trixie") as th: ...  # a Debian 13 host

CLI for debugging: `python tests/cluster/testhosts.py up|down|status|prune|build --workdir DIR
[--release trixie]`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Env DISTINFER_TESTHOSTS_CACHE shares one cache between clones (the rootfs takes a minute to build).
CACHE_DIR = Path(os.environ.get("DISTINFER_TESTHOSTS_CACHE") or REPO_ROOT / ".cache" / "testhosts")
# The Debian releases a test host can run (debootstrap's suite name -> what it is), each its own rootfs.
RELEASES = {"bookworm": "Debian 12", "trixie": "Debian 13"}
DEFAULT_RELEASE = "bookworm"
SUITE = DEFAULT_RELEASE  # the default release's suite name, as before releases could be chosen
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# What the hosts need to boot, be managed by Ansible (python3-apt for the apt module, sudo) and look like
# the servers the prereq role prepares; the internal network has no route to a mirror, so anything a role
# installs must already be here. Changing this list changes the cache key: the rootfs is rebuilt.
ROOTFS_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "iproute2",
    "iputils-ping",
    "procps",
    "sudo",
    "ca-certificates",
    "kmod",
    "curl",
)
# The prereq role installs these when missing; the hosts have no mirror to install from, so the rootfs
# carries them and the role finds them present (its install step then has nothing to do).
PREREQ_DEFAULTS = REPO_ROOT / "roles" / "prereq" / "defaults" / "main.yml"
# Likewise the prometheus_local role's packages, at their pinned versions; their own units are disabled
# in the rootfs (the role runs its own processes on its own ports), so no host starts them at boot.
PROMETHEUS_DEFAULTS = REPO_ROOT / "roles" / "prometheus_local" / "defaults" / "main.yml"
DISABLED_PACKAGE_UNITS = ("prometheus.service", "prometheus-node-exporter.service")
# Bumped when the rootfs configuration below changes, so cached rootfs are rebuilt.
ROOTFS_LAYOUT_VERSION = "1"
SEED_MOUNT = "/etc/distinfer-testhost"
SCRATCH_MOUNT = "/scratch"
LABEL = "distinfer.testhosts.run"
# The hard limits of this machine's container runtime setup (higher values fail to start containers).
ULIMITS = ("nofile=20000:20000", "nproc=32768:32768")
BOOT_TIMEOUT_S = 120.0
SSH_TIMEOUT_S = 60.0

SSHD_CONFIG = f"""\
# Written by distinfer's test hosts: key-only root login, host key and authorized key from the
# per-host seed directory the test run mounts read-only at {SEED_MOUNT}.
HostKey {SEED_MOUNT}/ssh_host_ed25519_key
AuthorizedKeysFile .ssh/authorized_keys {SEED_MOUNT}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxSessions 50
MaxStartups 50:30:100
"""

CONTAINERS_CONF = f"""\
# Written by distinfer's test hosts (tests/cluster/testhosts.py); podman reads it via CONTAINERS_CONF.
[containers]
default_ulimits = [{", ".join(f'"{u}"' for u in ULIMITS)}]
pids_limit = 16384

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
"""


def mac_for(ip: str) -> str:
    """A locally administered MAC made from an IPv4 address (02:00:a:b:c:d)."""
    return "02:00:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


class TestHostsError(RuntimeError):
    """A test host could not be built, started, reached or removed."""

    __test__ = False  # not a pytest test class


@dataclasses.dataclass(frozen=True)
class Host:
    """One running test host."""

    name: str
    ip: str
    container_id: str
    scratch: Path  # writable on both sides: here at this path, inside at SCRATCH_MOUNT


# ---------------------------------------------------------------------------------------------------
# podman and the rootfs


def _containers_conf() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / "containers.conf"
    if not path.exists() or path.read_text() != CONTAINERS_CONF:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(CONTAINERS_CONF)
        tmp.replace(path)
    return path


def podman(*args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run podman with this project's containers.conf (cgroupfs, runc, ulimits)."""
    env = {**os.environ, "CONTAINERS_CONF": str(_containers_conf())}
    argv = ["podman", *args]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise TestHostsError(
            f"`{shlex.join(argv)}` failed (exit {proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def check_release(release: str) -> str:
    """`release` when test hosts can run it, else a TestHostsError naming the ones they can."""
    if release not in RELEASES:
        known = ", ".join(f"{name} ({what})" for name, what in RELEASES.items())
        raise TestHostsError(f"no test-host rootfs for Debian release {release!r}; the releases are {known}")
    return release


def debian_mirror(release: str = DEFAULT_RELEASE) -> str:
    """The Debian mirror this machine's apt uses for `release`, else the one it uses for another Debian
    release (the same archive carries them all); env DISTINFER_DEBIAN_MIRROR overrides."""
    if override := os.environ.get("DISTINFER_DEBIAN_MIRROR"):
        return override
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    texts = []
    for path in sources:
        with contextlib.suppress(OSError):
            texts.append((path.read_text(), path.suffix == ".sources"))
    for suite in (release, *[r for r in RELEASES if r != release]):
        for text, deb822 in texts:
            if mirror := _mirror_in(text, deb822=deb822, suite=suite):
                return mirror
    return DEFAULT_MIRROR


def _mirror_in(text: str, *, deb822: bool, suite: str = DEFAULT_RELEASE) -> str | None:
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, flags=re.M))
            if "deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split():
                return fields.get("URIs", "").split()[0] if fields.get("URIs") else None
        return None
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            return words[1]
    return None


def rootfs_packages() -> list[str]:
    """ROOTFS_PACKAGES plus the prereq role's `prereq_packages` and the prometheus_local role's pinned
    `name=version` packages (so either list changing rebuilds the cache). A release without a pinned
    version gets its own instead when the rootfs is built, as the role installs there."""
    packages = set(ROOTFS_PACKAGES)
    if PREREQ_DEFAULTS.exists():
        defaults = yaml.safe_load(PREREQ_DEFAULTS.read_text()) or {}
        role_packages = defaults.get("prereq_packages") or []
        if not all(isinstance(p, str) and re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", p) for p in role_packages):
            raise TestHostsError(
                f"prereq_packages in {PREREQ_DEFAULTS} must be plain Debian package names "
                f"(the test hosts' rootfs installs them), got {role_packages!r}"
            )
        packages.update(role_packages)
    if PROMETHEUS_DEFAULTS.exists():
        defaults = yaml.safe_load(PROMETHEUS_DEFAULTS.read_text()) or {}
        pinned = defaults.get("prometheus_local_package_versions") or {}
        specs = [f"{name}={version}" for name, version in pinned.items()]
        if not all(re.fullmatch(r"[a-z0-9][a-z0-9+.-]+=[A-Za-z0-9.+~:-]+", spec) for spec in specs):
            raise TestHostsError(
                f"prometheus_local_package_versions in {PROMETHEUS_DEFAULTS} must map Debian package "
                f"names to versions (the test hosts' rootfs installs them), got {pinned!r}"
            )
        packages.update(specs)
    return sorted(packages)


def rootfs_key(release: str = DEFAULT_RELEASE) -> str:
    blob = json.dumps([release, rootfs_packages(), ROOTFS_LAYOUT_VERSION, SSHD_CONFIG])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_rootfs(release: str = DEFAULT_RELEASE) -> Path:
    """The release's cached rootfs directory, built with debootstrap first if missing (a minute or two)."""
    rootfs = CACHE_DIR / f"rootfs-{check_release(release)}-{rootfs_key(release)}"
    if (rootfs / ".complete").exists():
        return rootfs
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run builds it once; the others wait and reuse it
        if not (rootfs / ".complete").exists():
            _build_rootfs(rootfs, release)
            _remove_unused_rootfs(keep=rootfs, release=release)
    return rootfs


def _remove_unused_rootfs(keep: Path, release: str = DEFAULT_RELEASE) -> None:
    """Delete the release's rootfs built from an older package list, unless a live run's hosts still sit
    on it (another release's rootfs are that release's cache: kept)."""
    in_use = {keep}
    for path in _registry().glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads(path.read_text())
            if _owner_alive(record) and record.get("rootfs"):
                in_use.add(Path(record["rootfs"]))
    for old in CACHE_DIR.glob(f"rootfs-{release}-*"):
        if old not in in_use:
            logger.info("test hosts: removing the outdated rootfs %s", old)
            shutil.rmtree(old, ignore_errors=True)


def _build_rootfs(rootfs: Path, release: str = DEFAULT_RELEASE) -> None:
    if shutil.which("debootstrap") is None:
        raise TestHostsError(
            "debootstrap is not installed; run `bash scripts/install-system-deps.sh` as root"
        )
    build = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE_DIR))
    mirror = debian_mirror(release)
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(ROOTFS_PACKAGES)}",
        release,
        str(build),
        mirror,
    ]
    logger.info("test hosts: building the %s rootfs from %s (once; cached in %s)", release, mirror, rootfs)
    started = time.monotonic()
    try:
        _run_with_progress(argv, started)
        # The rest through apt, which orders postinst scripts properly (debootstrap's --include fails
        # configuring e.g. python3-cryptography, a dependency of python3-kubernetes).
        extra = [p for p in rootfs_packages() if p not in ROOTFS_PACKAGES]
        if extra:
            _apt_install(build, _offered(build, extra, release), started)
        _configure_rootfs(build)
        shutil.rmtree(rootfs, ignore_errors=True)
        build.rename(rootfs)
        (rootfs / ".complete").write_text(f"{time.time()}\n")
    finally:
        shutil.rmtree(build, ignore_errors=True)
    logger.info("test hosts: rootfs built in %.0f s", time.monotonic() - started)


def _offered(root: Path, packages: list[str], release: str) -> list[str]:
    """`packages` with each `name=version` the release's apt does not offer replaced by plain `name`:
    the release's own version, as the prometheus_local role falls back to on such a host."""
    pinned = dict(p.split("=", 1) for p in packages if "=" in p)
    if not pinned:
        return packages
    argv = ["run", "--rm", "--network=none", "--rootfs", str(root), "apt-cache", "madison", *pinned]
    madison = podman(*argv, timeout=300).stdout
    offered = {tuple(cell.strip() for cell in line.split("|")[:2]) for line in madison.splitlines()}
    chosen = []
    for package in packages:
        name, _, version = package.partition("=")
        if version and (name, version) not in offered:
            logger.warning(
                "test hosts: %s (%s) has no %s %s (the pinned version); the rootfs gets the release's own",
                release, RELEASES[release], name, version,
            )  # fmt: skip
            package = name
        chosen.append(package)
    return chosen


def _apt_install(root: Path, packages: list[str], started: float) -> None:
    """apt-get install into the new rootfs, run inside it by podman (which mounts /proc and /dev itself,
    so nothing of this machine's is ever mounted into a directory we later delete)."""
    logger.info("test hosts: apt-get install %s [%.0f s]", " ".join(packages), time.monotonic() - started)
    argv = [
        "run", "--rm", "--network=host", "--env=DEBIAN_FRONTEND=noninteractive", "--rootfs", str(root),
        "apt-get", "install", "--yes", "--quiet", "--no-install-recommends", *packages,
    ]  # fmt: skip
    proc = podman(*argv, check=False, timeout=900)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise TestHostsError(f"installing {packages} into the test-host rootfs failed:\n{tail}")


def _run_with_progress(argv: list[str], started: float) -> None:
    """Run debootstrap, logging each phase and a package count every few seconds while it downloads."""
    tail: list[str] = []
    phase, count, last_log = "", 0, 0.0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            tail = [*tail[-30:], line]
            words = line.split()
            if len(words) < 2 or words[0] != "I:":
                continue
            # One log line per phase ("I: Retrieving libc6", "I: Configuring curl...": per package), and
            # one every 10 s within a long phase; Retrieving/Validating alternate, so they count as one.
            current = "downloading" if words[1] in ("Retrieving", "Validating") else words[1]
            count += words[1] == "Retrieving"
            now = time.monotonic()
            if current != phase or now - last_log > 10:
                shown = f"downloading packages ({count} so far)" if current == "downloading" else line[3:]
                logger.info("test hosts: debootstrap: %s [%.0f s]", shown, now - started)
                phase, last_log = current, now
    if proc.returncode != 0:
        last = "\n".join(tail)
        raise TestHostsError(f"debootstrap failed (exit {proc.returncode}); its last lines:\n{last}")


def _configure_rootfs(root: Path) -> None:
    # mkdtemp made the build dir 0700; as the hosts' "/" that locks every non-root daemon (dbus) out.
    root.chmod(0o755)
    # Host keys are per host and per run (mounted from the seed dir), never shared through the image.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/ssh/sshd_config.d/10-distinfer-testhost.conf").write_text(SSHD_CONFIG)
    (root / SEED_MOUNT.lstrip("/")).mkdir(mode=0o700, exist_ok=True)
    (root / SCRATCH_MOUNT.lstrip("/")).mkdir(exist_ok=True)
    # Empty machine-id: systemd gives each container its own at boot.
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("localhost\n")
    # Units that have nothing to do in a container and only slow the boot or mark it degraded.
    wants = root / "etc/systemd/system"
    for unit in ("getty@tty1.service", "console-getty.service", "systemd-networkd-wait-online.service"):
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # Installed but not started at boot (what `systemctl disable` does: the role runs its own).
    for unit in DISABLED_PACKAGE_UNITS:
        (wants / "multi-user.target.wants" / unit).unlink(missing_ok=True)
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


# ---------------------------------------------------------------------------------------------------
# run registry: lets `prune` remove what a killed run left behind (and only that)


def _registry() -> Path:
    path = CACHE_DIR / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _owner_alive(record: Mapping[str, Any]) -> bool:
    pid = record.get("owner_pid")
    if pid is None:  # made by the CLI: lives until `down`
        return record.get("boot_id") == _boot_id()
    if record.get("boot_id") != _boot_id():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune_stale_runs() -> list[str]:
    """Remove the resources of earlier runs whose owning process died without `down()` (e.g. SIGKILL)."""
    pruned = []
    for path in sorted(_registry().glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            if not _owner_alive(record):
                logger.warning("test hosts: removing leftovers of dead run %s", record["run_id"])
                _remove_resources(record.get("containers", []), record.get("network"))
                path.unlink(missing_ok=True)
                pruned.append(record["run_id"])
    return pruned


def _remove_resources(container_ids: Sequence[str], network: str | None) -> list[str]:
    errors = []
    if container_ids:
        # One call: podman stops the containers in parallel (systemd shutdown takes a second or two).
        # On a loaded machine a container may stop on its own between podman's stop signal and its
        # SIGKILL ("container state improper: stopped"): the next try finds it stopped and removes it.
        for attempt in range(3):
            proc = podman("rm", "--force", "--time", "3", "--ignore", *container_ids, check=False)
            if proc.returncode == 0:
                break
            time.sleep(1 + attempt)
        else:
            errors.append(f"containers {[c[:12] for c in container_ids]}: {proc.stderr.strip()}")
    if network and podman("network", "exists", network, check=False).returncode == 0:
        proc = podman("network", "rm", network, check=False)
        if proc.returncode != 0:
            errors.append(f"network {network}: {proc.stderr.strip()}")
    return errors


# ---------------------------------------------------------------------------------------------------
# the hosts


class TestHosts:
    """Podman containers with systemd and sshd, one per name, on a per-run internal network."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        names: Sequence[str],
        workdir: Path | str,
        *,
        memory: str = "6g",
        shm_size: str = "2g",
        sysctls: Mapping[str, str] | None = None,
        venv: Path | str | None = None,
        release: str = DEFAULT_RELEASE,
    ) -> None:
        valid = all(re.fullmatch(r"[a-z][a-z0-9-]*", n) for n in names)
        if not names or len(set(names)) != len(names) or not valid:
            raise ValueError(
                f"test host names must be unique lowercase DNS labels (e.g. node1), got {list(names)!r}"
            )
        self.names = list(names)
        self.release = check_release(release)
        self.workdir = Path(workdir).resolve()
        self.memory = memory
        self.shm_size = shm_size
        self.sysctls = dict(sysctls or {})
        self.venv = Path(venv) if venv else REPO_ROOT / ".venv"
        self.run_id = secrets.token_hex(3)
        self.prefix = f"di-th-{self.run_id}"
        self.network: str | None = None
        self.hosts: list[Host] = []
        self._container_ids: list[str] = []
        self._rootfs: Path | None = None
        self._owner_pid: int | None = os.getpid()
        self._closed = False

    # -- paths --------------------------------------------------------------------------------------
    @property
    def ssh_key(self) -> Path:
        return self.workdir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "ssh" / "known_hosts"

    @property
    def control_path_dir(self) -> Path:
        # Ansible's ssh multiplexing sockets, per run: a later run that gets the same IPs must not reuse
        # a master connection to a host that is gone. Short, because unix socket paths are limited.
        return Path("/tmp") / f"{self.prefix}-cp"

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no test host named {name!r}; the hosts are {[h.name for h in self.hosts]}")

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> TestHosts:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> TestHosts:
        """Create, boot and check every host; on any failure remove what was created, then raise."""
        started = time.monotonic()
        atexit.register(self._down_quietly)
        try:
            rootfs = self._rootfs = ensure_rootfs(self.release)
            built = time.monotonic()
            self._make_keys()
            self._create_network()
            self._register()
            for index, name in enumerate(self.names):
                self._start_host(index, name, rootfs)
            self._give_bridge_an_address()
            for h in self.hosts:
                self._wait_booted(h)
            self._write_known_hosts()
            for h in self.hosts:
                self._wait_ssh(h)
        except BaseException:
            self._down_quietly()
            raise
        logger.info(
            "test hosts %s up (%s): %s (rootfs %.0f s, boot %.0f s)",
            self.prefix,
            self.release,
            ", ".join(f"{h.name}={h.ip}" for h in self.hosts),
            built - started,
            time.monotonic() - built,
        )
        return self

    def down(self) -> None:
        """Remove the containers and network this run created (by ID), and its registry entry."""
        if self._closed:
            return
        self._closed = True
        errors = _remove_resources(self._container_ids, self.network)
        shutil.rmtree(self.control_path_dir, ignore_errors=True)
        if not errors:
            (_registry() / f"{self.run_id}.json").unlink(missing_ok=True)
            (self.workdir / "testhosts.json").unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self._down_quietly)
        if errors:
            raise TestHostsError(f"test hosts {self.prefix}: could not remove " + "; ".join(errors))
        logger.info("test hosts %s removed", self.prefix)

    def power_off(self, name: str) -> None:
        """Stop a host's machine at once (its container, with every process in it), as a power cut."""
        podman("stop", "--time", "0", self.host(name).container_id)

    def is_running(self, name: str) -> bool:
        """Whether a host's machine (its container) runs."""
        out = podman("inspect", "--format", "{{.State.Running}}", self.host(name).container_id)
        return out.stdout.strip() == "true"

    def power_on(self, name: str) -> None:
        """Start a powered-off host again (same address and keys) and wait until SSH answers."""
        host = self.host(name)
        podman("start", host.container_id)
        self._wait_booted(host)
        self._wait_ssh(host)

    def _down_quietly(self) -> None:
        try:
            self.down()
        except Exception:
            logger.exception("test hosts %s: cleanup failed", self.prefix)

    # -- steps of up() ------------------------------------------------------------------------------
    def _make_keys(self) -> None:
        ssh_dir = self.ssh_key.parent
        ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.ssh_key.exists():
            _keygen(self.ssh_key, comment=f"distinfer-testhosts-{self.run_id}")
        for name in self.names:
            seed = self._seed_dir(name)
            seed.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(seed, 0o700)
            host_key = seed / "ssh_host_ed25519_key"
            if not host_key.exists():
                _keygen(host_key, comment=f"{name}-hostkey")
            shutil.copyfile(self.ssh_key.with_suffix(".pub"), seed / "authorized_keys")
            os.chmod(seed / "authorized_keys", 0o600)
            (self.workdir / "hosts" / name / "scratch").mkdir(parents=True, exist_ok=True)

    def _seed_dir(self, name: str) -> Path:
        return self.workdir / "hosts" / name / "seed"

    def _create_network(self) -> None:
        name = f"{self.prefix}-net"
        podman("network", "create", "--internal", "--label", f"{LABEL}={self.run_id}", name)
        self.network = name
        info = json.loads(podman("network", "inspect", name).stdout)[0]
        self._subnet = ipaddress.ip_network(info["subnets"][0]["subnet"])
        self._bridge = info["network_interface"]

    def _ip_for(self, index: int) -> str:
        # .1 is left to the bridge (host-local IPAM never hands out the gateway address); hosts from .11.
        return str(self._subnet.network_address + 11 + index)

    def _gateway(self) -> str:
        return str(self._subnet.network_address + 1)

    def _start_host(self, index: int, name: str, rootfs: Path) -> None:
        ip = self._ip_for(index)
        scratch = self.workdir / "hosts" / name / "scratch"
        argv = [
            "run",
            "--detach",
            f"--name={self.prefix}-{name}",
            f"--hostname={name}",
            f"--label={LABEL}={self.run_id}",
            f"--network={self.network}",
            f"--ip={ip}",
            # A fixed MAC, as a server's NIC keeps its own across power cycles: a host powered on again
            # must not wait for its peers' stale ARP entries (the old, random MAC) to time out.
            f"--mac-address={mac_for(ip)}",
            *[f"--add-host={n}:{self._ip_for(i)}" for i, n in enumerate(self.names) if n != name],
            "--systemd=always",
            # What systemd and Ansible's facts (virtualization_type=podman, role=guest) detect a container
            # by; podman sets it for images but not for --rootfs.
            "--env=container=podman",
            f"--shm-size={self.shm_size}",
            f"--memory={self.memory}",
            "--pids-limit=16384",
            *[f"--ulimit={u}" for u in ULIMITS],
            # sshd writes login records through the audit socket; ping needs raw sockets.
            "--cap-add=AUDIT_WRITE,NET_RAW",
            *[f"--sysctl={k}={v}" for k, v in self.sysctls.items()],
            *self._mounts(),
            f"--volume={self._seed_dir(name)}:{SEED_MOUNT}:ro",
            f"--volume={scratch}:{SCRATCH_MOUNT}:rw",
            # :O = a private overlay per container on top of the shared, read-only cached rootfs.
            "--rootfs",
            f"{rootfs}:O",
            "/sbin/init",
        ]
        container_id = podman(*argv).stdout.strip()
        self._container_ids.append(container_id)
        self._register()
        self.hosts.append(Host(name=name, ip=ip, container_id=container_id, scratch=scratch))

    def _mounts(self) -> list[str]:
        """The repo (code + venv) and the venv's Python installation, read-only at the same paths."""
        mounts = [f"--volume={REPO_ROOT}:{REPO_ROOT}:ro"]
        venv = self.venv.resolve()
        if not venv.is_relative_to(REPO_ROOT):
            mounts.append(f"--volume={venv}:{venv}:ro")
        prefix = _python_prefix(venv)
        # A venv on Debian's own python needs no mount: hosts of this machine's release have the same
        # one. Another release's have another (trixie: 3.13), and /usr cannot be mounted over theirs.
        if prefix is not None and any(prefix == Path(p) for p in ("/usr", "/")):
            if self.release != _this_release():
                raise TestHostsError(
                    f"the venv {venv} runs this machine's {prefix}/bin python ({_this_release() or 'not'} "
                    f"Debian's), which {self.release} test hosts do not have; make the venv from a Python "
                    "installed outside /usr (e.g. pyenv's, as `make install` with PYTHON=...) to use them"
                )
        elif prefix is not None and prefix != Path("/usr/local"):
            mounts.append(f"--volume={prefix}:{prefix}:ro")
        # A venv shared with another checkout (a git worktree's .venv linked to the main one) imports
        # distinfer from that checkout's folder, named by its editable install: there too.
        for source in _editable_sources(venv):
            if not source.is_relative_to(REPO_ROOT) and not source.is_relative_to(venv):
                mounts.append(f"--volume={source}:{source}:ro")
        return mounts

    def _give_bridge_an_address(self) -> None:
        # podman's CNI backend makes an --internal bridge without a host-side address, so this machine
        # could not reach the hosts. The address is on our own bridge only; it goes with the network.
        gateway = f"{self._gateway()}/{self._subnet.prefixlen}"
        show = ["ip", "-4", "-o", "addr", "show", "dev", self._bridge]
        shown = subprocess.run(show, capture_output=True, text=True, check=True).stdout
        if f" {gateway} " not in shown:
            add = ["ip", "addr", "add", gateway, "dev", self._bridge]
            subprocess.run(add, check=True, capture_output=True)

    def _wait_booted(self, host: Host) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        state = ""
        while time.monotonic() < deadline:
            proc = podman("exec", host.container_id, "systemctl", "is-system-running", check=False)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.exec(host.name, "systemctl", "--failed", "--no-legend", check=False)
                    logger.warning("test host %s booted degraded: %s", host.name, failed.stdout.strip())
                return
            time.sleep(0.5)
        logs = podman("logs", "--tail", "40", host.container_id, check=False)
        raise TestHostsError(
            f"test host {host.name} did not finish booting in {BOOT_TIMEOUT_S:.0f} s (systemd state "
            f"{state!r}); its console:\n{logs.stdout}{logs.stderr}"
        )

    def _write_known_hosts(self) -> None:
        lines = []
        for h in self.hosts:
            pub = (self._seed_dir(h.name) / "ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{h.ip},{h.name} {pub[0]} {pub[1]}\n")
        self.known_hosts.write_text("".join(lines))

    def _wait_ssh(self, host: Host) -> None:
        deadline = time.monotonic() + SSH_TIMEOUT_S
        while True:
            proc = self.ssh(host.name, "true", check=False, timeout=15)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TestHostsError(
                    f"test host {host.name} ({host.ip}) booted but SSH as root failed: {proc.stderr.strip()}"
                )
            time.sleep(0.5)

    def _register(self) -> None:
        record = {
            "run_id": self.run_id,
            "prefix": self.prefix,
            "workdir": str(self.workdir),
            "owner_pid": self._owner_pid,
            "boot_id": _boot_id(),
            "network": self.network,
            "containers": self._container_ids,
            "rootfs": str(self._rootfs) if self._rootfs else None,
            "release": self.release,
            "hosts": [dataclasses.asdict(h) | {"scratch": str(h.scratch)} for h in self.hosts],
        }
        text = json.dumps(record, indent=2)
        for path in (_registry() / f"{self.run_id}.json", self.workdir / "testhosts.json"):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)

    # -- using the hosts ----------------------------------------------------------------------------
    def ssh_argv(self, name: str) -> list[str]:
        """`ssh` with this run's key and known_hosts, to root on the named host (append a command)."""
        return [
            "ssh",
            "-i",
            str(self.ssh_key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            f"root@{self.host(name).ip}",
        ]

    def ssh(
        self, name: str, command: str, *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on a host over SSH, as Ansible would reach it."""
        proc = subprocess.run(
            [*self.ssh_argv(name), command], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise TestHostsError(
                f"on {name}: `{command}` failed (exit {proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout}"
            )
        return proc

    def exec(self, name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in a host through podman (no SSH): for inspecting a host, not for the test itself."""
        return podman("exec", self.host(name).container_id, *argv, check=check)

    def inventory_host_vars(self, name: str) -> dict[str, Any]:
        """The connection variables Ansible needs for one host."""
        return {
            "ansible_host": self.host(name).ip,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.ssh_key),
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
            ),
            "ansible_control_path_dir": str(self.control_path_dir),
            "ansible_python_interpreter": "/usr/bin/python3",
        }

    def write_inventory(
        self,
        path: Path | str,
        groups: Mapping[str, Sequence[str]],
        host_vars: Mapping[str, Mapping[str, Any]] | None = None,
        group_vars: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Path:
        """Write a YAML inventory: every host with its connection vars, then `groups` (group -> host names).

        `host_vars` adds variables per host; `group_vars` per group (the key "all" sets `all: vars:`).
        Hosts named in no group still appear under `all`. Returns the path.
        """
        host_vars = host_vars or {}
        group_vars = dict(group_vars or {})
        unknown = {n for members in groups.values() for n in members} | set(host_vars)
        unknown -= set(self.names)
        if unknown:
            raise ValueError(
                f"inventory names unknown test hosts {sorted(unknown)}; the hosts are {self.names}"
            )
        unknown_groups = set(group_vars) - set(groups) - {"all"}
        if unknown_groups:
            raise ValueError(f"group_vars for groups not in `groups`: {sorted(unknown_groups)}")
        all_group: dict[str, Any] = {
            "hosts": {n: {**self.inventory_host_vars(n), **host_vars.get(n, {})} for n in self.names}
        }
        if group_vars.get("all"):
            all_group["vars"] = dict(group_vars["all"])
        children: dict[str, Any] = {}
        for group, members in groups.items():
            entry: dict[str, Any] = {"hosts": {m: None for m in members}}
            if group_vars.get(group):
                entry["vars"] = dict(group_vars[group])
            children[group] = entry
        if children:
            all_group["children"] = children
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# Test-host inventory written by tests/cluster/testhosts.py (run {self.run_id})\n"
            + yaml.safe_dump({"all": all_group}, sort_keys=False, default_flow_style=False)
        )
        return path

    def write_local_platform_inventory(
        self, path: Path | str, names: Sequence[str], group_vars: Mapping[str, Any]
    ) -> Path:
        """The local platform's inventory shape (as inventory/local): the first of `names` the Ray head,
        the rest its workers, all under `ray_cluster` with `group_vars`. Returns the path."""
        unknown = set(names) - set(self.names)
        if unknown or not names:
            raise ValueError(
                f"inventory names unknown test hosts {sorted(unknown)}; the hosts are {self.names}"
            )
        inventory = {
            "all": {
                "hosts": {name: self.inventory_host_vars(name) for name in names},
                "children": {
                    "ray_cluster": {
                        "vars": dict(group_vars),
                        "children": {
                            "ray_head": {"hosts": {names[0]: None}},
                            "ray_workers": {"hosts": {name: None for name in names[1:]}},
                        },
                    }
                },
            }
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        return path

    def write_connection_overlay(
        self, path: Path | str, mapping: Mapping[str, str], host_vars: Mapping[str, Any] | None = None
    ) -> Path:
        """Point an existing inventory's hosts at test hosts: {inventory hostname: test host name}.

        Pass it after the real inventory (`-i inventory/poweredge -i overlay.yml`): Ansible merges the
        sources in order, so the real groups and group_vars apply and only the connection vars change,
        plus `host_vars` (set on every mapped host: what differs on a test host, e.g. its NIC name).
        """
        unknown = set(mapping.values()) - set(self.names)
        if unknown:
            raise ValueError(
                f"overlay maps to unknown test hosts {sorted(unknown)}; the hosts are {self.names}"
            )
        hosts = {
            inv_name: {**self.inventory_host_vars(th_name), **(host_vars or {})}
            for inv_name, th_name in mapping.items()
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# Connection overlay written by tests/cluster/testhosts.py (run {self.run_id})\n"
            + yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False, default_flow_style=False)
        )
        return path

    # -- CLI support --------------------------------------------------------------------------------
    @classmethod
    def from_state(cls, workdir: Path | str) -> TestHosts:
        """Re-attach to hosts a CLI `up` left running (read from <workdir>/testhosts.json)."""
        workdir = Path(workdir).resolve()
        state_file = workdir / "testhosts.json"
        if not state_file.exists():
            raise TestHostsError(f"no test hosts recorded in {workdir} (no testhosts.json); nothing to do")
        record = json.loads(state_file.read_text())
        names = [h["name"] for h in record["hosts"]] or ["none"]
        self = cls(names, workdir, release=record.get("release", DEFAULT_RELEASE))
        self.run_id, self.prefix, self.network = record["run_id"], record["prefix"], record["network"]
        self._container_ids = list(record["containers"])
        self.hosts = [
            Host(name=h["name"], ip=h["ip"], container_id=h["container_id"], scratch=Path(h["scratch"]))
            for h in record["hosts"]
        ]
        return self

    def detach(self) -> None:
        """Leave the hosts running after this process exits (CLI `up`); `down --workdir` removes them."""
        self._owner_pid = None
        self._register()
        atexit.unregister(self._down_quietly)
        self._closed = True


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _python_prefix(venv: Path) -> Path | None:
    """The installation a venv's python comes from (pyvenv.cfg `home` is its bin directory)."""
    cfg = venv / "pyvenv.cfg"
    if not cfg.exists():
        raise TestHostsError(f"{venv} is not a virtual environment (no pyvenv.cfg); run `make install` first")
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return Path(value.strip()).resolve().parent
    return None


def _this_release() -> str:
    """This machine's Debian release (VERSION_CODENAME of /etc/os-release), or "" when it is not Debian's."""
    with contextlib.suppress(OSError):
        text = Path("/etc/os-release").read_text()
        fields = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', text, flags=re.M))
        if fields.get("ID") == "debian":
            return fields.get("VERSION_CODENAME", "")
    return ""


def _editable_sources(venv: Path) -> list[Path]:
    """The folders the venv's editable installs put on sys.path (their `__editable__*.pth` lines)."""
    found = []
    for pth in sorted(venv.glob("lib/python*/site-packages/__editable__*.pth")):
        for line in pth.read_text().splitlines():
            path = Path(line.strip())
            if path.is_absolute() and path.is_dir():
                found.append(path.resolve())
    return found


# ---------------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start, inspect and remove distinfer's test hosts.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start hosts and leave them running; prints the inventory path")
    up.add_argument("--names", default="node1,node2,node3", help="comma-separated host names")
    build = sub.add_parser("build", help="build a release's cached rootfs now (done by `up` when missing)")
    for p in (up, build):
        p.add_argument("--release", default=DEFAULT_RELEASE, choices=sorted(RELEASES), help="Debian release")
    for p in (up, sub.add_parser("down", help="remove the hosts recorded in --workdir")):
        p.add_argument("--workdir", type=Path, default=CACHE_DIR / "cli", help="where keys and state live")
    status = sub.add_parser("status", help="show the recorded hosts and every run's containers")
    status.add_argument("--workdir", type=Path, default=CACHE_DIR / "cli")
    sub.add_parser("prune", help="remove leftovers of test-host runs whose process died")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    if args.command == "build":
        print(ensure_rootfs(args.release))
    elif args.command == "up":
        if (args.workdir / "testhosts.json").exists():
            raise SystemExit(
                f"{args.workdir} already has test hosts; run `down --workdir {args.workdir}` first"
            )
        hosts = TestHosts(args.names.split(","), args.workdir, release=args.release).up()
        hosts.detach()
        inventory = hosts.write_inventory(args.workdir / "inventory.yml", {"testhosts": hosts.names})
        print(f"inventory: {inventory}")
        for h in hosts.hosts:
            print(f"{h.name} {h.ip}  ssh: {shlex.join(hosts.ssh_argv(h.name))}")
    elif args.command == "down":
        hosts = TestHosts.from_state(args.workdir)
        hosts.down()
    elif args.command == "status":
        with contextlib.suppress(TestHostsError):
            hosts = TestHosts.from_state(args.workdir)
            for h in hosts.hosts:
                print(f"{h.name} {h.ip} {h.container_id[:12]}")
        listing = podman("ps", "--all", "--filter", f"label={LABEL}", "--format", "{{.Names}} {{.Status}}")
        print(listing.stdout)
        for path in sorted(_registry().glob("*.json")):
            record = json.loads(path.read_text())
            alive = "alive" if _owner_alive(record) else "stale"
            print(f"run {record['run_id']} ({alive}) workdir={record['workdir']}")
    elif args.command == "prune":
        print("pruned:", ", ".join(prune_stale_runs()) or "nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
