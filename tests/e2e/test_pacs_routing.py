"""The Orthanc plugin in a real Orthanc: rules, sends, completion calls, loop safety.

The node here is a real dcmtk ``storescp`` (its DICOM side) plus a small recording HTTP
server (its REST side), so these tests look only at what the plugin does; the tests with
the real node are in ``test_pacs_node.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from tests.plugin.pacs_helpers import PLUGIN_SCRIPT, RecordingNodeApi, StoreScp, ct_series, storescu, wait_for
from tests.support.mrfiles import make_mr_dataset, write_mr_series
from tests.support.orthanc import DICOMWEB_PLUGIN, OrthancServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

RULES = """
[nodes.mrinode]
modality = "mrinode"
url = "{url}"
token = "secret-token"
ae_titles = ["MRINODE"]
manufacturers = ["mrinode"]

[[rules]]
name = "typo-rule"
node = "mrinode"
modallity = ["MR"]

[[rules]]
name = "brain-mr"
node = "mrinode"
modality = ["MR"]
body_part = ["BRAIN", "HEAD", ""]
calling_ae = ["SCANNER1"]
"""


def _orthanc(tmp_path: Path, scp: StoreScp, api: RecordingNodeApi, *, stable_age: int = 1,
             **mrinode: Any) -> OrthancServer:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.format(url=api.url))
    return OrthancServer(
        tmp_path / "orthanc",
        modalities={"mrinode": ("MRINODE", "127.0.0.1", scp.port)},
        plugins=[DICOMWEB_PLUGIN],
        python_script=PLUGIN_SCRIPT,
        extra_config={
            "StableAge": stable_age,
            "UserMetadata": {"MrinodeStatus": 4401},
            "Mrinode": {
                "RulesFile": str(rules),
                "StateFile": str(tmp_path / "state.json"),
                "RetryDelay": 0.5,
                **mrinode,
            },
        },
    )


def _study_view(orthanc: OrthancServer, study_uid: str) -> dict[str, Any]:
    sid = orthanc.find_study(study_uid)
    assert sid is not None
    view: dict[str, Any] = orthanc.get(f"/mrinode/studies/{sid}")
    return view


def test_routes_matching_study_once_and_never_routes_results(tmp_path: Path) -> None:
    with StoreScp(tmp_path / "node-in") as scp, RecordingNodeApi() as api, _orthanc(tmp_path, scp, api) as orthanc:
        # A bad rule is reported by name in Orthanc's log and over REST; the good one still routes.
        rules = orthanc.get("/mrinode/rules")
        assert [r["name"] for r in rules["rules"]] == ["brain-mr"]
        assert any("typo-rule" in e and "modallity" in e and "'modality'" in e for e in rules["errors"])
        assert "bad routing rule" in orthanc.log_tail(200) and "typo-rule" in orthanc.log_tail(200)
        assert rules["nodes"]["mrinode"]["token"] == "***"

        study_uid, t1 = write_mr_series(tmp_path / "t1", 4, series_description="AX T1")
        _, flair = write_mr_series(tmp_path / "fl", 4, study_uid=study_uid, series_description="AX FLAIR")
        ct_uid, ct = ct_series(tmp_path / "ct", 3)
        storescu(orthanc.dicom_port, t1 + flair, calling="SCANNER1")
        storescu(orthanc.dicom_port, ct, calling="SCANNER1")

        wait_for(lambda: api.completes(), 60, "the completion call to the node")
        assert api.completes() == [f"/studies/{study_uid}/complete"]
        assert all(c["auth"] == "Bearer secret-token" for c in api.calls)
        assert len(scp.files()) == 8
        view = wait_for(lambda: (v := _study_view(orthanc, study_uid))["status"] == "routed" and v, 30, "status")
        assert view["decisions"][-1]["rule"] == "brain-mr" and view["decisions"][-1]["action"] == "send"
        assert view["node_jobs"]["mrinode"][0]["state"] == "done"  # proxied from the node's REST API
        sid = orthanc.find_study(study_uid)
        assert orthanc.client().get(f"/studies/{sid}/metadata/MrinodeStatus").text == "routed"

        # The CT study matches no rule: decided, never sent.
        ct_view = wait_for(lambda: (v := _study_view(orthanc, ct_uid))["decisions"] and v, 30, "the CT decision")
        assert ct_view["decisions"][-1]["action"] == "none"
        assert "Modality CT not in ['MR']" in " ".join(ct_view["decisions"][-1]["reasons"])

        # Results come back from the node's AE into the same study: marked, not routed again.
        result = make_mr_dataset(study_uid=study_uid, series_uid=generate_uid(), instance_number=1)
        result.Modality = "SEG"
        result.Manufacturer = "mrinode"
        result_path = tmp_path / "seg.dcm"
        result.save_as(result_path, enforce_file_format=True)
        storescu(orthanc.dicom_port, [result_path], calling="MRINODE")
        wait_for(lambda: _study_view(orthanc, study_uid)["status"] == "results", 30, "the results status")
        meta = orthanc.client().get(f"/studies/{sid}/metadata/MrinodeStatus").text
        assert meta == "results"
        last = _study_view(orthanc, study_uid)["decisions"][-1]
        assert last["action"] == "already-sent" and last["result_series"] == 1
        assert api.completes() == [f"/studies/{study_uid}/complete"]
        assert len(scp.files()) == 8

        # A late instance from the scanner is sent alone, and the node is told again.
        late = make_mr_dataset(study_uid=study_uid, series_uid=generate_uid(), instance_number=1)
        late_path = tmp_path / "late.dcm"
        late.save_as(late_path, enforce_file_format=True)
        storescu(orthanc.dicom_port, [late_path], calling="SCANNER1")
        wait_for(lambda: len(api.completes()) == 2, 60, "the second completion call")
        assert len(scp.files()) == 9
        assert [d["instances_new"] for d in _study_view(orthanc, study_uid)["decisions"] if d["action"] == "send"] == [8, 1]
        assert len(api.completes()) == 2 and len(scp.files()) == 9


def test_state_survives_restart_and_node_down_is_reported(tmp_path: Path) -> None:
    with StoreScp(tmp_path / "node-in") as scp, RecordingNodeApi() as api:
        orthanc = _orthanc(tmp_path, scp, api)
        with orthanc:
            study_uid, files = write_mr_series(tmp_path / "t2", 3, series_description="AX T2")
            storescu(orthanc.dicom_port, files, calling="SCANNER1")
            wait_for(lambda: api.completes(), 60, "the completion call")
            sid = orthanc.find_study(study_uid)
            orthanc.restart()
            # Asked again after a restart, the plugin remembers what it sent.
            again = orthanc.post(f"/mrinode/studies/{sid}/route")
            assert again["action"] == "already-sent"
            forced = orthanc.post(f"/mrinode/studies/{sid}/route", json={"force": True})
            assert forced["action"] == "send" and forced["instances_new"] == 3
            assert len(api.completes()) == 2 and len(scp.files()) == 3  # storescp overwrites same UIDs
            # The rules file is read again on request; a new rule shows at once.
            rules_path = tmp_path / "rules.toml"
            rules_path.write_text(rules_path.read_text() + '\n[[rules]]\nname = "knee"\nnode = "mrinode"\nbody_part = "KNEE"\n')
            reloaded = orthanc.post("/mrinode/rules/reload")
            assert [r["name"] for r in reloaded["rules"]] == ["brain-mr", "knee"]
            # Uploaded over REST, a study has no calling AE: the rule (calling_ae = SCANNER1) says no.
            rest_uid, rest_files = write_mr_series(tmp_path / "rest", 1)
            orthanc.upload(rest_files[0])
            view = wait_for(lambda: (v := _study_view(orthanc, rest_uid))["decisions"] and v, 30, "the REST decision")
            assert view["decisions"][-1]["action"] == "none"
            assert "calling AE (none) not in ['SCANNER1']" in view["decisions"][-1]["reasons"][0]
            assert "BodyPartExamined BRAIN not in ['KNEE']" in view["decisions"][-1]["reasons"][1]
    # The node's REST API is gone: the DICOM send still succeeds, the failure is recorded.
    with StoreScp(tmp_path / "node-in2") as scp2:
        api2 = RecordingNodeApi()
        api2.server.server_close()  # closed before use: its port refuses connections
        (tmp_path / "second").mkdir()
        orthanc = _orthanc(tmp_path / "second", scp2, api2)
        with orthanc:
            study_uid, files = write_mr_series(tmp_path / "t1b", 2, series_description="AX T1")
            storescu(orthanc.dicom_port, files, calling="SCANNER1")
            view = wait_for(
                lambda: (v := _study_view(orthanc, study_uid))["state"].get("sends") and v, 60, "the send record"
            )
            detail = view["state"]["sends"][-1]["detail"]
            assert view["state"]["sends"][-1]["ok"] is True
            assert "completion call failed" in detail and "cannot be reached" in detail
            assert "error" in view["node_jobs"]["mrinode"]


def test_quiet_period_routes_ahead_of_stable_age_and_a_late_instance_goes_after(tmp_path: Path) -> None:
    """``Mrinode.QuietPeriod``: routed 0.3 s after the last instance, long before StableAge (60 s here)."""
    with StoreScp(tmp_path / "node-in") as scp, RecordingNodeApi() as api, \
            _orthanc(tmp_path, scp, api, stable_age=60, QuietPeriod=0.3) as orthanc:
        assert "routed 0.3 s after their last instance" in orthanc.log_tail(200)
        study_uid, t1 = write_mr_series(tmp_path / "t1", 6, series_description="AX T1")
        _, flair = write_mr_series(tmp_path / "fl", 6, study_uid=study_uid, series_description="AX FLAIR")
        storescu(orthanc.dicom_port, t1 + flair, calling="SCANNER1")
        wait_for(lambda: api.completes(), 20, "the completion call (StableAge is 60 s: only the quiet period can route)")
        assert len(scp.files()) == 12
        # A pause longer than the quiet period: the late series goes on its own, nothing lost or sent twice.
        _, late = write_mr_series(tmp_path / "late", 2, study_uid=study_uid, series_description="AX T2")
        storescu(orthanc.dicom_port, late, calling="SCANNER1")
        wait_for(lambda: len(api.completes()) == 2, 20, "the second completion call")
        sends = [d["instances_new"] for d in _study_view(orthanc, study_uid)["decisions"] if d["action"] == "send"]
        assert sends == [12, 2] and len(scp.files()) == 14


def test_a_wrong_quiet_period_is_named_and_stable_age_still_routes(tmp_path: Path) -> None:
    with StoreScp(tmp_path / "node-in") as scp, RecordingNodeApi() as api, \
            _orthanc(tmp_path, scp, api, QuietPeriod="fast") as orthanc:
        assert "Mrinode.QuietPeriod must be a number of seconds" in orthanc.log_tail(200)
        _, files = write_mr_series(tmp_path / "t2", 2, series_description="AX T2")
        storescu(orthanc.dicom_port, files, calling="SCANNER1")
        wait_for(lambda: api.completes(), 60, "the completion call (StableAge)")
