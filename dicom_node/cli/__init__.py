"""The ``mrinode`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code). Heavy imports (torch, MONAI,
highdicom) happen inside those callables so that ``mrinode --help`` and the receive path
stay light.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

#: Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "serve",
    "check",
    "jobs",
    "identify",
    "convert",
    "infer",
    "models_cmd",
    "worker",
)

#: Packages installed beside the node that add their own sub-commands through
#: ``register(subparsers)``, listed after the node's: the offline training verbs
#: (``synth``, ``train``, ``retrain``) live with the training code, which imports the
#: node and is never imported by it (looked up by name, skipped when not installed).
EXTENSIONS: tuple[str, ...] = ("training.cli",)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mrinode")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command registered.

    Returns
    -------
    argparse.ArgumentParser
        The parser for ``mrinode``.
    """
    parser = argparse.ArgumentParser(
        prog="mrinode",
        description="A DICOM node for MRI beside a PACS: identify sequences, run models, send SEG and SR back.",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    parser.add_argument("--verbose", action="store_true",
                        help="keep the libraries' INFO lines (highdicom, pydicom, pynetdicom; UIDs still hashed)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(sub)
    for name in EXTENSIONS:
        try:
            extension = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # not installed here: the node runs without it
            raise
        extension.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mrinode`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        The process exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from dicom_node.logs import configure_logging

    configure_logging(args.log_level, verbose=args.verbose)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
