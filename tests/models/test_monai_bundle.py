"""MONAI Bundles (Model Zoo layout) run through the registry like native bundles.

The bundles are real MONAI Bundles built by :mod:`tests.models.monai_bundle_factory`: the
shipped demo network exported as ``network_def`` + ``model.pt``, and a TorchScript
``model.ts`` FLAIR-lesion model. Volumes are a small phantom at 3 mm (CPU-light).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.bundle import BundleError, sha256_file
from models.monai_bundle import check_bundle, read_card
from models.registry import Model, drain_load_events, load_model
from tests.models.monai_bundle_factory import LESION_LABEL, export_native_as_monai, make_flair_lesion_bundle
from tests.models.phantom import phantom_arrays

AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


@pytest.fixture(scope="module")
def demo_monai(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(2)
    return export_native_as_monai("brain-tumour-demo", tmp_path_factory.mktemp("monai") / "demo-monai")


@pytest.fixture(scope="module")
def flair_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_flair_lesion_bundle(tmp_path_factory.mktemp("monai") / "flair-lesion")


@pytest.fixture(scope="module")
def flair_lesion() -> tuple[np.ndarray, np.ndarray]:
    """A FLAIR volume: an ellipsoid head (500) with a bright spherical lesion (1200), and the lesion mask."""
    rng = np.random.default_rng(5)
    shape = (36, 40, 36)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
    head = (((grid - centre) / (np.array(shape)[:, None, None, None] * 0.42)) ** 2).sum(0) <= 1.0
    lesion = np.sqrt(((grid - centre - 4) ** 2).sum(0)) <= 4
    img = np.where(lesion, 1200.0, np.where(head, 500.0, 0.0)) + rng.normal(0, 20, shape)
    return np.abs(img).astype(np.float32), lesion


@pytest.fixture(scope="module")
def phantom() -> tuple[dict[str, np.ndarray], np.ndarray]:
    return phantom_arrays(3, shape=(36, 40, 36))


def test_exported_demo_predicts_what_the_native_engine_predicts(demo_monai, phantom) -> None:
    images, truth = phantom
    drain_load_events()
    native = load_model("brain-tumour-demo", device="cpu")
    monai = load_model(demo_monai, device="cpu")
    assert isinstance(monai, Model)
    assert monai.kind == "monai" and native.kind == "native"
    assert monai.card.name == "brain-tumour-demo-monai"
    assert monai.channels == native.channels == ["T1", "T1C", "T2", "FLAIR"]
    assert [(lab.value, lab.type, lab.colour) for lab in monai.card.labels] == \
           [(lab.value, lab.type, lab.colour) for lab in native.card.labels]
    found = []
    for subset in (["T1", "T1C", "T2", "FLAIR"], ["FLAIR"]):
        a = native.predict({k: images[k] for k in subset}, AFFINE)
        b = monai.predict({k: images[k] for k in subset}, AFFINE)
        assert b.labels.shape == truth.shape and b.labels.dtype == np.uint8
        assert np.mean(a.labels == b.labels) > 0.999
        assert b.channels_used == a.channels_used == subset
        assert b.not_assessed == a.not_assessed
        assert b.ood_score == pytest.approx(a.ood_score, abs=1e-3)
        found.append(int((b.labels > 0).sum()))
    assert found[0] > 100  # not trivially equal: the phantom's tumour is found from all four sequences


def test_sidecar_keys_in_metadata_give_the_same_card(demo_monai, tmp_path) -> None:
    other = export_native_as_monai("brain-tumour-demo", tmp_path / "b", sidecar_in_metadata=True)
    assert not (other / "configs" / "mrinode.json").exists()
    assert read_card(other).to_dict() == read_card(demo_monai).to_dict()


def test_torchscript_bundle_with_its_own_codes_and_colours(flair_bundle, flair_lesion, phantom) -> None:
    flair, lesion = flair_lesion
    model = load_model(flair_bundle, device="cpu")
    assert model.card.name == "flair-lesion"
    assert model.card.required_sequences == ["FLAIR"]
    assert model.card.weights_sha256 == sha256_file(flair_bundle / "models" / "model.ts")
    lab = model.card.labels[0]
    assert (lab.value, lab.name, list(lab.type), list(lab.colour)) == (1, LESION_LABEL["name"], LESION_LABEL["type"],
                                                                       LESION_LABEL["colour"])
    # preprocessing read from inference.json where the sidecar is silent
    assert model.card.preprocessing["spacing_mm"] == [3.0, 3.0, 3.0]
    assert model.card.preprocessing["roi_size"] == [64, 64, 64]
    assert model.card.preprocessing["normalize"] == "zscore_per_channel"
    pred = model.predict({"FLAIR": flair, "T1": phantom[0]["T1"][:36, :40, :36]}, AFFINE)
    assert pred.channels_used == ["FLAIR"]
    assert set(np.unique(pred.labels)) == {0, 1}
    found = pred.labels == 1
    assert (found & lesion).sum() / (found | lesion).sum() > 0.7  # the bright lesion, and little else


def test_a_bundle_changed_on_disk_is_loaded_again(tmp_path, flair_lesion) -> None:
    flair, _ = flair_lesion
    folder = make_flair_lesion_bundle(tmp_path / "f", version="0.1.0")
    drain_load_events()
    first = load_model(folder, device="cpu")
    assert load_model(folder, device="cpu") is first
    assert drain_load_events() == [("flair-lesion", "0.1.0")]
    make_flair_lesion_bundle(tmp_path / "f", threshold=0.5, version="0.2.0")  # a new version promoted in place
    second = load_model(folder, device="cpu")
    assert second is not first and second.card.version == "0.2.0"
    assert drain_load_events() == [("flair-lesion", "0.2.0")]
    small = (first.predict({"FLAIR": flair}, AFFINE).labels == 1).sum()
    assert (second.predict({"FLAIR": flair}, AFFINE).labels == 1).sum() > small


def _edit(rel: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / rel
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return apply


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(key, value)


BROKEN: dict[str, tuple[Callable[[Path], object], list[str]]] = {
    "no metadata": (lambda f: (f / "configs/metadata.json").unlink(), ["configs/metadata.json", "missing"]),
    "bad json": (lambda f: (f / "configs/inference.json").write_text("{\"network_def\": "),
                 ["configs/inference.json", "not valid JSON"]),
    "no sidecar": (lambda f: (f / "configs/mrinode.json").unlink(), ["configs/mrinode.json", "'mrinode'"]),
    "no labels": (_edit("configs/mrinode.json", _drop("labels")), ["configs/mrinode.json", "'labels'"]),
    "no channels": (_edit("configs/mrinode.json", _drop("channels")), ["configs/mrinode.json", "'channels'"]),
    "unknown sequence": (_edit("configs/mrinode.json", _set("channels", ["T1", "T1C", "T2", "FLAIRR"])),
                         ["configs/mrinode.json", "'channels[3]'", "'FLAIRR'", "Did you mean 'FLAIR'"]),
    "channel count": (_edit("configs/mrinode.json", _set("channels", ["T1", "FLAIR"])),
                      ["configs/mrinode.json", "'channels'", "configs/metadata.json", "4 input channel"]),
    "label out of range": (_edit("configs/mrinode.json", lambda d: d["labels"][2].__setitem__("value", 7)),
                           ["configs/mrinode.json", "'labels[2].value'", "4 output channels"]),
    "label without code": (_edit("configs/mrinode.json", lambda d: d["labels"][0].pop("type")),
                           ["configs/mrinode.json", "'labels[0].type'"]),
    "bad colour": (_edit("configs/mrinode.json", lambda d: d["labels"][1].__setitem__("colour", [300, 0, 0])),
                   ["configs/mrinode.json", "'labels[1].colour'"]),
    "no network_def": (_edit("configs/inference.json", _drop("network_def")),
                       ["configs/inference.json", "'network_def'", "models/model.pt"]),
    "no weights": (lambda f: (f / "models/model.pt").unlink(), ["models/model.pt", "missing"]),
    "no version": (_edit("configs/metadata.json", _drop("version")), ["configs/metadata.json", "'version'"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_bundle_is_refused_with_a_sentence_naming_file_and_key(demo_monai, tmp_path, case) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(demo_monai, folder)
    check_bundle(folder)  # intact before the damage
    damage, words = BROKEN[case]
    damage(folder)
    with pytest.raises(BundleError) as err:
        check_bundle(folder)
    for w in words:
        assert w in str(err.value)
    assert str(folder) in str(err.value)
    with pytest.raises(BundleError):
        load_model(folder, device="cpu")


def test_weights_that_do_not_fit_network_def_are_refused(demo_monai, tmp_path) -> None:
    folder = tmp_path / "misfit"
    shutil.copytree(demo_monai, folder)
    _edit("configs/inference.json", lambda d: d["network_def"]["cfg"]["encoder"].__setitem__("feature_size", 24))(folder)
    check_bundle(folder)  # the files are well-formed; only building the network finds it
    with pytest.raises(BundleError, match=re.escape("models/model.pt does not fit configs/inference.json 'network_def'")):
        load_model(folder, device="cpu")


def test_check_bundle_imports_no_torch_so_the_node_can_call_it_at_start_up(demo_monai) -> None:
    import subprocess
    import sys

    code = (f"import sys; from models.registry import check_bundle; check_bundle({str(demo_monai)!r}); "
            "check_bundle('brain-tumour-demo'); print(*(m in sys.modules for m in ('torch', 'monai', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["False", "False", "False"]
