"""Build real MONAI Bundles (Model Zoo layout) for tests.

:func:`export_native_as_monai` writes a native bundle's network as a MONAI Bundle: the
network as ``network_def`` in ``configs/inference.json`` (``_target_`` the segmenter builder),
its weights as ``models/model.pt`` (a state dict), MONAI metadata and the mrinode sidecar
copied from the native card. :func:`make_flair_lesion_bundle` writes a second, different
bundle: a TorchScript network (``models/model.ts``) that calls FLAIR hyperintensity
(z > ``threshold``) a lesion, with its own code and colour.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["LESION_LABEL", "export_native_as_monai", "make_flair_lesion_bundle", "make_lesion_bundle", "metadata"]

#: The flair-lesion bundle's one label (a code and a colour the demo card does not use).
LESION_LABEL: dict[str, Any] = {
    "value": 1,
    "name": "FLAIR hyperintensity",
    "category": ["49755003", "SCT", "Morphologically Altered Structure"],
    "type": ["52988006", "SCT", "Lesion"],
    "colour": [255, 0, 255],
    "tracking_id": "FLAIR-HI",
    "anatomic_region": ["12738006", "SCT", "Brain"],
}


def metadata(version: str, inputs: dict[str, str], outputs: dict[str, str], description: str) -> dict[str, Any]:
    """MONAI Model Zoo metadata (the fields of its ``meta_schema``) for a segmentation bundle."""
    import monai
    import numpy
    import torch

    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": version,
        "changelog": {version: "built by the mrinode test suite"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {},
        "task": "Segmentation",
        "description": description,
        "authors": "mrinode tests",
        "copyright": "none",
        "data_type": "nibabel",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR",
                                 "num_channels": len(inputs), "spatial_shape": ["16*n", "16*n", "16*n"],
                                 "dtype": "float32", "value_range": [], "is_patch_data": True,
                                 "channel_def": inputs}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(outputs),
                                 "spatial_shape": ["16*n", "16*n", "16*n"], "dtype": "float32",
                                 "value_range": [0, 1], "is_patch_data": True, "channel_def": outputs}},
        },
    }


def _label(lab: Any) -> dict[str, Any]:
    out = {"value": lab.value, "name": lab.name, "category": list(lab.category), "type": list(lab.type),
           "colour": list(lab.colour)}
    if getattr(lab, "tracking_id", ""):
        out["tracking_id"] = lab.tracking_id
    if getattr(lab, "anatomic_region", None):
        out["anatomic_region"] = list(lab.anatomic_region)
    return out


def _write(folder: Path, rel: str, data: dict[str, Any]) -> None:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def export_native_as_monai(native: str | Path, out: str | Path, name: str | None = None,
                           sidecar_in_metadata: bool = False) -> Path:
    """Write a native bundle as a MONAI Bundle (state dict + ``network_def``).

    Parameters
    ----------
    native : str or Path
        Native bundle name or folder.
    out : str or Path
        The MONAI Bundle folder to write.
    name : str, optional
        The sidecar's ``name`` (default: the native name + ``-monai``).
    sidecar_in_metadata : bool
        Put the sidecar keys in ``metadata.json`` under ``"mrinode"`` instead of ``configs/mrinode.json``.

    Returns
    -------
    Path
        The folder.
    """
    import torch

    from models.bundle import load_bundle

    bundle = load_bundle(native)
    card = bundle.card
    folder = Path(out)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    net = bundle.build_network("cpu")
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    inference = {
        "imports": ["$import models.segmenter"],
        "bundle_root": ".",
        "device": "cpu",
        "network_def": {"_target_": "models.segmenter.build_segmenter", "cfg": card.network},
        "network": "$@network_def.to(@device)",
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": card.preprocessing.get("roi_size", [96, 96, 96]),
                    "sw_batch_size": 1, "overlap": card.preprocessing.get("overlap", 0.25), "mode": "gaussian"},
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": card.preprocessing.get("spacing_mm", [1, 1, 1]),
             "mode": "bilinear"},
            {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True,
             "channel_wise": card.preprocessing.get("normalize") == "zscore_per_channel"},
        ]},
    }
    outputs = {"0": "background", **{str(lab.value): lab.name for lab in card.labels}}
    meta = metadata(card.version, {str(i): c for i, c in enumerate(card.channels)}, outputs, card.intended_use)
    side: dict[str, Any] = {
        "name": name or f"{card.name}-monai",
        "channels": list(card.channels),
        "required_sequences": list(card.required_sequences),
        "optional_sequences": list(card.optional_sequences),
        "labels": [_label(lab) for lab in card.labels],
        # the native card's post-processing too (mask outside the head, label_requires, OOD reference)
        "preprocessing": dict(card.preprocessing),
    }
    if sidecar_in_metadata:
        meta["mrinode"] = side
    else:
        _write(folder, "configs/mrinode.json", side)
    _write(folder, "configs/metadata.json", meta)
    _write(folder, "configs/inference.json", inference)
    return folder


def make_flair_lesion_bundle(out: str | Path, threshold: float = 2.0, name: str = "flair-lesion",
                             version: str = "0.1.0") -> Path:
    """Write a TorchScript MONAI Bundle that labels z-scored FLAIR above ``threshold`` (label 1, :data:`LESION_LABEL`).

    The network is one 1x1x1 convolution: logits ``(0, 4 (x - threshold))``.

    Returns
    -------
    Path
        The folder.
    """
    return make_lesion_bundle(out, "FLAIR", LESION_LABEL, threshold=threshold, name=name, version=version)


def make_lesion_bundle(out: str | Path, sequence: str, label: dict[str, Any], threshold: float = 2.0,
                       name: str = "lesion", version: str = "0.1.0") -> Path:
    """Write a TorchScript MONAI Bundle that labels one z-scored sequence above ``threshold`` as ``label``.

    Parameters
    ----------
    out : str or Path
        The bundle folder.
    sequence : str
        The one input channel's sequence (required).
    label : dict
        The sidecar label (value 1, name, category, type, colour…).
    threshold : float
        In standard deviations of the head's intensities.
    name, version : str
        Sidecar name and metadata version.

    Returns
    -------
    Path
        The folder.
    """
    import torch

    folder = Path(out)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    conv = torch.nn.Conv3d(1, 2, kernel_size=1)
    weight = torch.zeros(2, 1, 1, 1, 1)
    weight[1, 0] = 4.0
    conv.weight = torch.nn.Parameter(weight)
    conv.bias = torch.nn.Parameter(torch.tensor([0.0, -4.0 * threshold]))
    torch.jit.script(conv.eval()).save(str(folder / "models" / "model.ts"))
    meta = metadata(version, {"0": sequence}, {"0": "background", "1": label["name"]},
                    f"{sequence} hyperintensity (z-score above a threshold); a test bundle, not for clinical use.")
    _write(folder, "configs/metadata.json", meta)
    _write(folder, "configs/inference.json", {
        "device": "cpu",
        "network": "$torch.jit.load(@bundle_root + '/models/model.ts')",
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 64], "sw_batch_size": 1, "overlap": 0.0},
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Spacingd", "keys": "image", "pixdim": [3.0, 3.0, 3.0]},
            {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True},
        ]},
    })
    _write(folder, "configs/mrinode.json", {
        "name": name,
        "channels": [sequence],
        "required_sequences": [sequence],
        "optional_sequences": [],
        "labels": [label],
        "preprocessing": {"mask_outside_head": True},
    })
    return folder
