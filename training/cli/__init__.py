"""The offline training verbs of ``mrinode``: ``synth``, ``train`` and ``retrain``.

They live with the training code, which imports the node's modules (sequence labels,
readers), never the reverse: :mod:`dicom_node.cli` adds them through :func:`register`
when this package is installed beside it. As there, each module exposes
``register(subparsers)`` and imports torch, MONAI and the training code only inside the
callables it sets as ``func``, so ``mrinode --help`` stays light.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["COMMAND_MODULES", "register"]

#: Sub-command modules of this package, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = ("synth", "train", "retrain")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add every training sub-command to ``mrinode``'s parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The top-level parser's sub-commands.
    """
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
