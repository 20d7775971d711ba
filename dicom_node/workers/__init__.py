"""Warm worker processes: the supervisor's side (:mod:`.pool`, :mod:`.process`) and the child's (:mod:`.child`).

The node keeps one long-lived worker process per configured device. The supervisor sends
it one job spec at a time as a JSON line on its stdin; the child runs
:func:`dicom_node.jobrun.run_spec`, writes ``result.json`` into the job's folder and answers
with one JSON line on its stdout (the models it loaded, its memory). Models stay loaded in
the child between jobs. The protocol is a pipe of JSON lines so that the same child can later
be driven from another machine.

Nothing heavy is imported here: the node's receive path imports the supervisor.
"""

from __future__ import annotations

__all__: list[str] = []
