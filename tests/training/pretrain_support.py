"""Shared helpers for the pretraining tests: tiny configs pointed at a folder of synthetic subjects."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"
OBJECTIVES_3D = ("swin_ssl", "cross_sequence", "prism")


def tiny_raw(objective: str, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The shipped ``pretrain-<objective>-tiny.toml``, reading ``data_dir`` and writing ``out_dir``."""
    raw = tomllib.loads((CONFIGS / f"pretrain-{objective}-tiny.toml").read_text())
    raw["data"]["sources"] = [str(data_dir)]
    raw["data"].pop("synth", None)
    raw["run"]["out_dir"] = str(out_dir)
    return raw


def write_toml(raw: dict[str, Any], path: Path) -> Path:
    """Write a (flat tables, inline values) config dict as TOML."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict | list)]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def synth_subjects(base: Path, n: int = 4, seed: int = 424200, voxel_mm: float = 4.0) -> Path:
    """Write ``n`` synthetic subjects (the project's engine) under ``base`` once; reuse them after."""
    out = base / f"pretrain-synth-{n}-{seed}-{voxel_mm}"
    done = out / ".done"
    if not done.is_file():
        from training.synth import generate_subject, write_subject

        out.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_subject(generate_subject(seed + i, voxel_mm=voxel_mm, tumour=i % 2 == 0), out)
        done.write_text("ok\n")
    return out
