#!/usr/bin/python
"""Ansible module: keep one long-running command up (or down) on a host, idempotently.

Where systemd is PID 1 the command runs as a transient unit (`systemd-run`), so systemd owns its
cgroup and `systemctl stop` ends exactly its processes. Elsewhere (a container, a CI runner) it runs
as a background process in its own session, recorded in a pidfile with its start time so a reused
PID is never mistaken for it; stopping signals that process tree only. Either way, a process that is
running with the same fingerprint (its command and environment) is left alone: changed=false.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: distinfer_process
short_description: Start or stop one long-running command as a transient systemd unit or a pidfile process
description:
  - Idempotent - a running process whose fingerprint matches is left alone; a different fingerprint
    restarts it; C(state=stopped) stops only the recorded unit or process tree.
options:
  name:
    description: Unit name (without .service) and the stem of the record file.
    type: str
    required: true
  state:
    description: Whether the process should run.
    type: str
    choices: [started, stopped]
    default: started
  argv:
    description: The command (required for C(state=started)).
    type: list
    elements: str
  env:
    description: Environment variables for the command (values are not secrets; pass secrets as files).
    type: dict
    default: {}
  state_dir:
    description: Directory for the record file and, in process mode, the log.
    type: path
    required: true
  supervisor:
    description: C(auto) picks C(systemd) where systemd is PID 1, else C(process).
    type: str
    choices: [auto, systemd, process]
    default: auto
  stop_timeout:
    description: Seconds between SIGTERM and SIGKILL when stopping.
    type: int
    default: 15
  settle:
    description: Seconds to wait after a start before checking the command is still alive (no C(ready_path)).
    type: float
    default: 2.0
  ready_path:
    description:
      - A file the command writes once it is working (the node recorder's first line). A start then
        waits until the file has grown, for at most C(ready_timeout) seconds, instead of the fixed
        C(settle); a command that exits first fails the start, with its last output, as before.
    type: path
  ready_timeout:
    description: Seconds a start waits for C(ready_path) before it fails.
    type: float
    default: 60.0
  restart:
    description:
      - C(on-failure) has systemd start the command again 3 s after it exits with an error (as a
        service would be), e.g. a Ray worker whose raylet missed Ray's fixed 30 s registration timeout
        on a loaded host, or whose head restarted. A stop asked for (C(state=stopped), a changed
        fingerprint) is never undone. Systemd supervisor only; a pidfile process is not restarted.
    type: str
    choices: [never, on-failure]
    default: never
"""

RESTART_SEC = 3

RETURN = r"""
pid:
  description: Main PID of the running process (0 when stopped).
  type: int
instance:
  description: PID and kernel start time of the running process; changes whenever it restarts.
  type: str
supervisor:
  description: systemd or process.
  type: str
log:
  description: Where its output goes (a file, or the unit's journal).
  type: str
"""


def _systemd_is_init() -> bool:
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip() == "systemd" and shutil.which("systemd-run") is not None
    except OSError:
        return False


def _fingerprint(argv: list[str], env: dict[str, str]) -> str:
    text = json.dumps({"argv": argv, "env": env}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): with the PID, a process identity."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has finished; only its parent has not collected it yet
        return None
    return fields[19]


def _instance(pid: int) -> str:
    return f"{pid}:{_start_time(pid)}"


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def _tree(pid: int) -> list[int]:
    children = _children_map()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


class Record:
    """The record file: what was started, by whom, and how to find it again."""

    def __init__(self, state_dir: str, name: str) -> None:
        self.path = os.path.join(state_dir, f"{name}.json")

    def read(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def write(self, data: dict) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)


class Systemd:
    name = "systemd"

    def __init__(self, module: AnsibleModule, unit: str) -> None:
        self.module, self.unit = module, f"{unit}.service"

    def _show(self, prop: str) -> str:
        rc, out, _ = self.module.run_command(["systemctl", "show", "-p", prop, "--value", self.unit])
        return out.strip() if rc == 0 else ""

    def running_pid(self, record: dict) -> int:
        if self._show("ActiveState") not in ("active", "activating", "reloading"):
            return 0
        return int(self._show("MainPID") or 0)

    def start(self, argv: list[str], env: dict[str, str], record: dict) -> dict:
        cmd = [
            "systemd-run",
            f"--unit={self.unit}",
            f"--description=distinfer: {os.path.basename(argv[0])}",
            "--property=KillMode=control-group",
            f"--property=TimeoutStopSec={self.module.params['stop_timeout']}",
            *(
                ["--property=Restart=on-failure", f"--property=RestartSec={RESTART_SEC}"]
                if self.module.params["restart"] == "on-failure"
                else []
            ),
            *[f"--setenv={k}={v}" for k, v in sorted(env.items())],
            "--",
            *argv,
        ]
        # Whatever is left of the unit goes first, or systemd-run refuses the name ("already
        # loaded"): a unit whose command just exited by itself (a Ray worker whose head restarted) is
        # still `deactivating` while systemd stops what is left in its cgroup; with restart: on-failure
        # it may be waiting for its restart (`auto-restart`), or systemd may have started the old
        # command again since this module looked. `systemctl stop` ends each of those (and cancels a
        # pending restart; a stop asked for is never undone); a failed unit keeps its name until reset.
        # A stopped unit can stay loaded a moment until systemd collects it: retry, never for longer
        # than a stop can take.
        deadline = time.monotonic() + self.module.params["stop_timeout"] + 10
        while True:
            self.module.run_command(["systemctl", "stop", self.unit])
            self.module.run_command(["systemctl", "reset-failed", self.unit])
            rc, out, err = self.module.run_command(cmd)
            if rc == 0:
                return {"unit": self.unit, "log": f"journalctl -u {self.unit}"}
            if "already loaded" not in (err + out) or time.monotonic() > deadline:
                self.module.fail_json(msg=f"systemd-run {self.unit} failed (exit {rc}): {err or out}")
            time.sleep(0.5)

    def stop(self, record: dict) -> None:
        rc, out, err = self.module.run_command(["systemctl", "stop", self.unit])
        if rc != 0:
            self.module.fail_json(msg=f"systemctl stop {self.unit} failed (exit {rc}): {err or out}")

    def tail(self, record: dict) -> str:
        _, out, _ = self.module.run_command(["journalctl", "-u", self.unit, "-n", "40", "--no-pager"])
        return out


class Process:
    name = "process"

    def __init__(self, module: AnsibleModule, name: str) -> None:
        self.module = module
        self.log = os.path.join(module.params["state_dir"], f"{name}.log")

    def running_pid(self, record: dict) -> int:
        pid = int(record.get("pid") or 0)
        if pid and record.get("start_time") and _start_time(pid) == record["start_time"]:
            return pid
        return 0

    def start(self, argv: list[str], env: dict[str, str], record: dict) -> dict:
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: outlives this module, killable as a group
                cwd="/",
            )
        return {"pid": proc.pid, "start_time": _start_time(proc.pid), "log": self.log}

    def stop(self, record: dict) -> None:
        pid = self.running_pid(record)
        if not pid:
            return
        tree = _tree(pid)
        for p in tree:
            _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + self.module.params["stop_timeout"]
        while time.monotonic() < deadline and any(_start_time(p) for p in tree):
            time.sleep(0.2)
        for p in _tree(pid) if _start_time(pid) else tree:
            if _start_time(p):
                _signal(p, signal.SIGKILL)

    def tail(self, record: dict) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-40:])
        except OSError:
            return ""


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def _wait_ready(module: AnsibleModule, sup: Systemd | Process, record: dict, grown_from: int) -> None:
    """Until the command has written to ready_path; fails when it exits first or takes too long."""
    p = module.params
    deadline = time.monotonic() + p["ready_timeout"]
    while _size(p["ready_path"]) <= max(grown_from, 0):
        if not sup.running_pid(record):
            module.fail_json(
                msg=f"{p['name']} exited before it wrote {p['ready_path']}; its last output:\n"
                + sup.tail(record),
                supervisor=sup.name,
            )
        if time.monotonic() > deadline:
            tail = sup.tail(record)
            sup.stop(record)  # not left running unrecorded
            module.fail_json(
                msg=f"{p['name']} did not write {p['ready_path']} within {p['ready_timeout']} s of starting"
                " (stopped); its last output:\n" + tail,
                supervisor=sup.name,
            )
        time.sleep(0.1)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["started", "stopped"], "default": "started"},
            "argv": {"type": "list", "elements": "str"},
            "env": {"type": "dict", "default": {}},
            "state_dir": {"type": "path", "required": True},
            "supervisor": {"type": "str", "choices": ["auto", "systemd", "process"], "default": "auto"},
            "stop_timeout": {"type": "int", "default": 15},
            "settle": {"type": "float", "default": 2.0},
            "ready_path": {"type": "path"},
            "ready_timeout": {"type": "float", "default": 60.0},
            "restart": {"type": "str", "choices": ["never", "on-failure"], "default": "never"},
        },
        required_if=[("state", "started", ["argv"])],
        supports_check_mode=True,
    )
    p = module.params
    env = {k: str(v) for k, v in p["env"].items()}
    record_file = Record(p["state_dir"], p["name"])
    record = record_file.read()
    kind = record.get("supervisor") or p["supervisor"]
    if kind == "auto":
        kind = "systemd" if _systemd_is_init() else "process"
    sup = Systemd(module, p["name"]) if kind == "systemd" else Process(module, p["name"])
    pid = sup.running_pid(record)

    if p["state"] == "stopped":
        if pid and not module.check_mode:
            sup.stop(record)
            record_file.remove()
        module.exit_json(changed=bool(pid), pid=0, supervisor=sup.name, log=record.get("log", ""))

    fingerprint = _fingerprint(p["argv"], env)
    if pid and record.get("fingerprint") == fingerprint:
        module.exit_json(
            changed=False, pid=pid, instance=_instance(pid), supervisor=sup.name, log=record.get("log", "")
        )
    if module.check_mode:
        module.exit_json(changed=True, pid=pid, supervisor=sup.name, log=record.get("log", ""))
    if pid:  # running, but not what is asked for now: replace it
        sup.stop(record)
    os.makedirs(p["state_dir"], mode=0o755, exist_ok=True)
    ready_from = _size(p["ready_path"]) if p["ready_path"] else 0
    started = sup.start(p["argv"], env, record)
    new_record = {
        "supervisor": sup.name,
        "fingerprint": fingerprint,
        "argv": p["argv"],
        "started_at": time.time(),
        **started,
    }
    if p["ready_path"]:
        _wait_ready(module, sup, new_record, ready_from)
    else:
        time.sleep(p["settle"])
    pid = sup.running_pid(new_record)
    if not pid:
        module.fail_json(
            msg=f"{p['name']} exited "
            + (
                f"just after writing {p['ready_path']}"
                if p["ready_path"]
                else f"within {p['settle']} s of starting"
            )
            + "; its last output:\n"
            + sup.tail(new_record),
            supervisor=sup.name,
        )
    new_record["pid"] = pid
    new_record.setdefault("start_time", _start_time(pid))
    record_file.write(new_record)
    module.exit_json(
        changed=True, pid=pid, instance=_instance(pid), supervisor=sup.name, log=new_record.get("log", "")
    )


if __name__ == "__main__":
    main()
