"""Settings the serving processes read from their environment (never from the models file)."""

from __future__ import annotations

import os

from distinfer.config import ConfigError, ModelsFile


def resolve_api_key(models: ModelsFile) -> str | None:
    """The API key named by `api_key_env`, or None when the file asks for none.

    Fails closed: a file that names a key variable which is unset refuses to start rather than
    serving without the key the operator asked for.
    """
    if not models.api_key_env:
        return None
    key = os.environ.get(models.api_key_env, "")
    if not key:
        raise ConfigError(
            f"api_key_env names {models.api_key_env!r} but that environment variable is empty or unset "
            "in this process; export it (on every Ray node) or remove api_key_env from the models file"
        )
    return key
