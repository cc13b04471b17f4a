"""Settings the serving processes read from their environment (never from the models file)."""

from __future__ import annotations

import os
from pathlib import Path

from distinfer.config import ConfigError, ModelsFile


def resolve_api_key(models: ModelsFile) -> str | None:
    """The API key named by `api_key_env`, or None when the file asks for none.

    The key is read from the variable itself or, when that is unset, from the file named by
    `<api_key_env>_FILE` (how the Ansible roles hand it to Ray nodes: a 0600 file, so the key is in
    no process environment or command line). Fails closed: a file that names a key variable which
    resolves to nothing refuses to start rather than serving without the key the operator asked for.
    """
    if not models.api_key_env:
        return None
    name = models.api_key_env
    key = os.environ.get(name, "")
    key_file = os.environ.get(f"{name}_FILE", "")
    if not key and key_file:
        try:
            key = Path(key_file).read_text().strip()
        except OSError as err:
            raise ConfigError(
                f"{name}_FILE names {key_file!r}, which cannot be read ({err.strerror}); "
                f"make the file readable by the serving processes or set the key itself in {name}"
            ) from None
    if not key:
        raise ConfigError(
            f"api_key_env names {name!r} but neither {name} nor a file named by {name}_FILE holds a key "
            "in this process; export one of them (on every Ray node) or remove api_key_env from the "
            "models file"
        )
    return key
