"""The model registry: one ``load_model`` for both bundle formats, warm, with load events counted."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from models.bundle import BundleError, load_bundle, save_bundle
from models.registry import (
    LoadedModel,
    Model,
    check_bundle,
    drain_load_events,
    find_bundle,
    list_models,
    load_model,
)
from tests.models.monai_bundle_factory import make_flair_lesion_bundle


@pytest.fixture()
def native_copy(tmp_path: Path) -> Path:
    """A private copy of the demo bundle (its own folder, so its own cache entry)."""
    folder = tmp_path / "demo-copy"
    shutil.copytree(load_bundle("brain-tumour-demo").path, folder)
    return folder


def test_a_native_bundle_loads_once_and_stays_warm(native_copy) -> None:
    drain_load_events()
    model = load_model(native_copy, device="cpu")
    assert isinstance(model, Model) and isinstance(model, LoadedModel)
    assert model.kind == "native"
    assert model.card.name == "brain-tumour-demo"
    assert model.channels == ["T1", "T1C", "T2", "FLAIR"]
    assert model.device == "cpu"  # engine attributes reach through
    assert drain_load_events() == [("brain-tumour-demo", model.card.version)]
    assert load_model(native_copy, device="cpu") is model
    assert drain_load_events() == []


def test_a_new_native_version_on_disk_is_loaded_again(native_copy) -> None:
    drain_load_events()
    first = load_model(native_copy, device="cpu")
    bundle = load_bundle(native_copy)
    state = first.net.state_dict()
    state = {k: (v + 0.01 if v.is_floating_point() and k.endswith("weight") else v) for k, v in state.items()}
    card = bundle.card
    promoted = card.version + "+promoted"
    assert first.card.version != promoted
    card.version = promoted
    save_bundle(native_copy, card, state)  # promoted in place
    drain_load_events()
    second = load_model(native_copy, device="cpu")
    assert second is not first and second.card.version == promoted
    assert drain_load_events() == [("brain-tumour-demo", promoted)]


def test_concurrent_first_loads_count_one_load(tmp_path) -> None:
    folder = make_flair_lesion_bundle(tmp_path / "lesion")
    other = tmp_path / "demo-copy"
    shutil.copytree(load_bundle("brain-tumour-demo").path, other)
    drain_load_events()
    got: list[object] = []
    barrier = threading.Barrier(6)

    def load(path: Path) -> None:
        barrier.wait()
        got.append(load_model(path, device="cpu"))

    threads = [threading.Thread(target=load, args=(p,)) for p in (folder, other) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = drain_load_events()
    shipped = load_bundle("brain-tumour-demo").card.version
    assert sorted(events) == [("brain-tumour-demo", shipped), ("flair-lesion", "0.1.0")]
    assert len({id(m) for m in got}) == 2


def test_list_models_shows_both_kinds(tmp_path) -> None:
    make_flair_lesion_bundle(tmp_path / "flair-lesion")
    refs = {r.name: r for r in list_models([tmp_path])}
    assert refs["brain-tumour-demo"].kind == "native"
    assert refs["flair-lesion"].kind == "monai"
    assert refs["flair-lesion"].card.channels == ["FLAIR"]
    assert find_bundle("flair-lesion", [tmp_path]) == ("monai", tmp_path / "flair-lesion")


def test_an_unknown_name_gets_a_did_you_mean(tmp_path) -> None:
    make_flair_lesion_bundle(tmp_path / "flair-lesion")
    with pytest.raises(BundleError, match=r"no model bundle named 'flair-lesoin'.*Did you mean 'flair-lesion'"):
        load_model("flair-lesoin", search_paths=[tmp_path])


def test_a_folder_that_is_no_bundle_is_refused(tmp_path) -> None:
    with pytest.raises(BundleError, match=r"neither card\.json \(native\) nor configs/metadata\.json"):
        load_model(tmp_path, device="cpu")


def test_check_bundle_refuses_native_weights_that_do_not_match_the_card(native_copy) -> None:
    check_bundle(native_copy)
    with open(native_copy / "weights.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\0\0\0\1")
    with pytest.raises(BundleError, match="SHA-256"):
        check_bundle(native_copy)


def test_check_bundle_by_name_for_a_monai_bundle(tmp_path) -> None:
    folder = make_flair_lesion_bundle(tmp_path / "flair-lesion")
    check_bundle("flair-lesion", [tmp_path])
    (folder / "configs" / "mrinode.json").write_text("{}")
    with pytest.raises(BundleError, match=r"configs/mrinode.json lacks the key 'channels'"):
        check_bundle("flair-lesion", [tmp_path])


def test_engine_cache_eviction_counts_the_reload(tmp_path) -> None:
    """A native engine evicted from the engine cache (4 entries) and loaded again is a load again."""
    torch.set_num_threads(2)
    base = load_bundle("brain-tumour-demo").path
    folders = []
    for i in range(5):
        f = tmp_path / f"copy{i}"
        shutil.copytree(base, f)
        folders.append(f)
    drain_load_events()
    for f in folders:
        load_model(f, device="cpu")
    assert len(drain_load_events()) == 5
    load_model(folders[0], device="cpu")  # evicted by the fifth
    assert len(drain_load_events()) == 1
    load_model(folders[0], device="cpu")
    assert drain_load_events() == []


def test_cli_models_list_shows_both_kinds_with_sequences_labels_and_invalid_bundles(tmp_path, capsys) -> None:
    from dicom_node.cli import main

    make_flair_lesion_bundle(tmp_path / "flair-lesion")
    (tmp_path / "broken" / "configs").mkdir(parents=True)
    (tmp_path / "broken" / "configs" / "metadata.json").write_text("{")
    assert main(["models", "list", "--models-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "brain-tumour-demo 0.5.3  [native]" in out
    assert "flair-lesion 0.1.0  [monai]" in out
    assert "sequences: required FLAIR; optional none" in out
    assert "labels: 1 FLAIR hyperintensity (SCT 52988006, #ff00ff)" in out
    assert f"INVALID {tmp_path / 'broken'}: " in out and "configs/metadata.json is not valid JSON" in out
    assert main(["models", "list", "--models-dir", str(tmp_path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    kinds = {m["name"]: m["kind"] for m in data["models"]}
    assert kinds["flair-lesion"] == "monai" and kinds["brain-tumour-demo"] == "native"
    assert [i["path"] for i in data["invalid"]] == [str(tmp_path / "broken")]


def test_cli_models_check_runs_a_bundle_once_and_reports_seconds_and_memory(tmp_path, capsys) -> None:
    from dicom_node.cli import main

    make_flair_lesion_bundle(tmp_path / "flair-lesion")
    assert main(["models", "check", "flair-lesion", "--models-dir", str(tmp_path), "--device", "cpu",
                 "--shape", "32", "32", "24", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "monai" and out["study"]["sequences"] == ["FLAIR"]
    assert out["predict_seconds"] > 0 and out["load_seconds"] >= 0 and out["peak_rss_mb"] > 50
    assert out["voxels_per_label"]["1"] > 0  # the synthetic lesion is found
    assert main(["models", "check", "brain-tumour-demo", "--device", "cpu", "--shape", "24", "24", "16"]) == 0
    text = capsys.readouterr().out
    assert "brain-tumour-demo 0.5.3 [native] on cpu" in text and "predict" in text and "peak" in text
    assert main(["models", "check", "flair-lesoin", "--models-dir", str(tmp_path)]) == 2
    assert "Did you mean 'flair-lesion'" in capsys.readouterr().err


def test_warm_models_are_bounded_by_memory(native_copy: Path, tmp_path: Path) -> None:
    """``[workers] model_cache_mb``: beyond the limit the least recently used model is dropped
    and loaded (and counted) again when next used; the model in use always stays."""
    from models import registry

    second = tmp_path / "demo-copy-2"
    shutil.copytree(native_copy, second)
    drain_load_events()
    first_model = load_model(native_copy, device="cpu")
    one = registry._model_bytes(first_model.engine)
    assert one > 0
    try:
        registry.set_cache_limit_mb(1.5 * one / 2**20)  # room for one model, not two
        load_model(second, device="cpu")
        held = [n for _, _, n in registry.warm_models()]
        assert sum(held) <= 1.5 * one and len(held) == 1
        assert len(drain_load_events()) == 2
        load_model(native_copy, device="cpu")  # dropped: loaded again
        assert len(drain_load_events()) == 1
        registry.set_cache_limit_mb(0)  # no limit: both stay
        load_model(second, device="cpu")
        load_model(native_copy, device="cpu")
        assert len(registry.warm_models()) >= 2
    finally:
        registry.set_cache_limit_mb(0)
