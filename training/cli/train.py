"""``mrinode train pretrain|finetune|evaluate --config FILE``."""

from __future__ import annotations

import argparse
import importlib
import tomllib
from pathlib import Path

__all__ = ["register"]

#: Sub-command to the module whose ``main(args)`` runs it (imported lazily: torch, MONAI).
_TARGETS: dict[str, str] = {
    "pretrain": "training.pretrain.run",
    "finetune": "training.finetune",
    "evaluate": "training.evaluate",
}


#: ``evaluate`` with a config holding this table runs the label-efficiency evidence instead.
_LABEL_EFFICIENCY = "training.pretrain.label_efficiency"


def _target(args: argparse.Namespace) -> str:
    """The module for ``args``: ``evaluate`` goes to the label-efficiency evidence when its
    config has a ``[label_efficiency]`` table, else to bundle evaluation (which reports an
    unreadable config itself)."""
    if args.train_command == "evaluate":
        try:
            raw = tomllib.loads(Path(args.config).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return _TARGETS["evaluate"]
        if isinstance(raw.get("label_efficiency"), dict):
            return _LABEL_EFFICIENCY
    return _TARGETS[args.train_command]


def _run(args: argparse.Namespace) -> int:
    module = importlib.import_module(_target(args))
    result: int = module.main(args)
    return result


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``train`` sub-command with ``pretrain``, ``finetune`` and ``evaluate``."""
    p = subparsers.add_parser("train", help="pretrain, fine-tune or evaluate models (offline)")
    sub = p.add_subparsers(dest="train_command", metavar="STEP")
    sub.required = True
    helps = {
        "pretrain": "self-supervised pretraining of an encoder",
        "finetune": "supervised fine-tuning of a segmenter; exports a bundle",
        "evaluate": "Dice and HD95 per region of a bundle on held-out subjects, or (a config with a "
                    "[label_efficiency] table) the pretraining label-efficiency curves; markdown report",
    }
    for name, text in helps.items():
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument("--config", required=True, help="TOML config file (see training/configs/)")
        if name != "evaluate":
            q.add_argument("--max-steps", type=int, default=None, help="override the config's step count")
            q.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
            if name == "finetune":
                q.add_argument("--export-only", action="store_true",
                               help="export the bundle from the run's last checkpoint (no data loading, no training)")
        else:
            q.add_argument("--report-only", action="store_true",
                           help="label-efficiency configs: redraw the report from the results so far")
        q.set_defaults(func=_run)
