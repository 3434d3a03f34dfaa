"""Config overlays (configs/*.yaml): reading one, merging it over params, `dvc exp run -S` args."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_vae.config import (
    PARAMS_FILE,
    ConfigError,
    Params,
    parse_params,
    read_params_mapping,
)


def load_overlay(path: str | Path) -> dict[str, Any]:
    """Read a partial params file (configs/*.yaml): the same schema, only the keys that differ."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config; see configs/ for the ones that exist")
    data = read_params_mapping(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of sections, got {data!r}")
    return data


def merge_overlay(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `overlay` over `base`: mappings merge key by key, everything else replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = merge_overlay(base[key], value)
        else:
            merged[key] = value
    return merged


def _override_value(value: Any) -> str:
    """A value in the Hydra override grammar `dvc exp run -S` parses; strings always quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    raise ConfigError(f"cannot express {value!r} as a `dvc exp run -S` value")


def overlay_to_set_args(overlay: dict[str, Any], prefix: str = "") -> list[str]:
    """Flatten an overlay into `dvc exp run` arguments: ['-S', 'train.epochs=35', ...]."""
    args: list[str] = []
    for key, value in overlay.items():
        if isinstance(value, dict):
            args += overlay_to_set_args(value, f"{prefix}{key}.")
        else:
            args += ["-S", f"{prefix}{key}={_override_value(value)}"]
    return args


def params_with_overlay(overlay_path: str | Path | None,
                        params_path: str | Path = PARAMS_FILE) -> Params:
    """params.yaml with an overlay merged over it, validated; params.yaml alone without one."""
    raw = read_params_mapping(params_path)
    return parse_params(merge_overlay(raw, load_overlay(overlay_path)) if overlay_path else raw)
