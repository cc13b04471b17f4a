"""roles/ray_local/tasks/chat.yml for real on this machine (the step of site.yml that starts the chat
page on the local platform): `distinfer chat` started as a pidfile process against a real app
(`distinfer serve --bare`, synthetic engine), answering /health with that app's URL and serving the
Gradio page; a second run changes nothing; with an API key in the inventory (distinfer_api_key), the
page reads it from the app's own 0600 file (token.yml writes it), named on its command line (never the
key itself); the `process` role stops exactly that process.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from helpers import local_head_inventory
from helpers import run_playbook as run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from synthetic_server import free_port, synthetic_server

PLAY = """
- name: Chat page as site.yml starts it
  hosts: ray_cluster
  gather_facts: false
  tasks:
    - name: The state directory, as site.yml makes it first
      ansible.builtin.file: {path: "{{ ray_local_state_dir }}", state: directory, mode: "0755"}
    - name: The token and API key files, as site.yml writes them first
      ansible.builtin.include_role: {name: ray_local, tasks_from: token.yml}
      when: process_state is not defined
    - name: Chat page
      ansible.builtin.include_role: {name: ray_local, tasks_from: chat.yml}
      when: process_state is not defined
    - name: Stop the chat page
      ansible.builtin.include_role: {name: process}
      when: process_state is defined
"""


def _inventory(tmp_path: Path, app_port: int, chat_port: int, api_key: str = "") -> Path:
    cluster_vars = {
        "ray_local_state_dir": str(tmp_path / "state"),
        "ray_local_supervisor": "process",
        "distinfer_chat_port": chat_port,
        "distinfer_api_key": api_key,
        # What the preflight role's plan says of this deployment (the part chat.yml reads).
        "distinfer_plan": {
            "head": "local",
            "endpoint": f"http://127.0.0.1:{app_port}",
            "api_key_env": "DISTINFER_API_KEY" if api_key else None,
        },
    }
    return local_head_inventory(tmp_path / "inv", cluster_vars)


def _cmdline(tmp_path: Path) -> list[str]:
    record = json.loads((tmp_path / "state" / "distinfer-chat.json").read_text())
    return Path(f"/proc/{record['pid']}/cmdline").read_text().split("\0")[:-1]


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_chat_tasks_start_the_page_once_hand_over_the_key_as_a_file_and_stop(tmp_path: Path) -> None:
    playbook = tmp_path / "chat.yml"
    playbook.write_text(PLAY)
    chat_port = free_port()
    with synthetic_server(tmp_path) as app:
        app_port = int(app.url.rsplit(":", 1)[1])
        inventory = _inventory(tmp_path, app_port, chat_port)
        try:
            first = run(str(playbook), inventory, timeout=240)
            assert first.returncode == 0 and first.total_changed() >= 1, first.output[-3000:]
            health = httpx.get(f"http://127.0.0.1:{chat_port}/health", timeout=10).json()
            assert health == {"status": "ok", "api": f"http://127.0.0.1:{app_port}/v1"}
            assert "gradio" in httpx.get(f"http://127.0.0.1:{chat_port}/", timeout=10).text.lower()
            assert f"Chat page: http://127.0.0.1:{chat_port}/" in first.output
            second = run(str(playbook), inventory, timeout=240)
            assert second.returncode == 0 and second.total_changed() == 0, second.output[-3000:]

            keyed = _inventory(tmp_path, app_port, chat_port, api_key="chat-key-123")
            third = run(str(playbook), keyed, timeout=240)
            assert third.returncode == 0, third.output[-3000:]
            key_file = tmp_path / "state" / "api_key"
            assert key_file.read_text() == "chat-key-123" and oct(key_file.stat().st_mode & 0o777) == "0o600"
            argv = _cmdline(tmp_path)
            assert argv[argv.index("--api-key-file") + 1] == str(key_file)
            assert "chat-key-123" not in " ".join(argv) and "chat-key-123" not in third.output
            assert httpx.get(f"http://127.0.0.1:{chat_port}/health", timeout=30).status_code == 200
        finally:
            stop = run(str(playbook), inventory, extra_vars=_stop_vars(), timeout=120)
        assert stop.returncode == 0, stop.output[-3000:]
        assert _closed(chat_port), "the chat page still answers after the process role stopped it"


def _stop_vars() -> dict[str, Any]:
    return {
        "process_name": "distinfer-chat",
        "process_state": "stopped",
        "process_dir": "{{ ray_local_state_dir }}",
        "process_supervisor": "{{ ray_local_supervisor }}",
    }


def test_the_play_file_is_what_site_yml_includes() -> None:
    main = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "roles/ray_local/tasks/main.yml").read_text()
    )
    assert {"name": "Ray local | Start the chat page", "ansible.builtin.include_tasks": "chat.yml"} in main
