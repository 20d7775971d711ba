"""Protocol families and the cross-protocol split of the label-efficiency evidence.

A hospital has unlabelled studies from every scanner and labels from one. The synthetic
engine (:func:`training.synth.generate_subject`) draws the vendor, field strength, SNR,
motion and the T1 technique (3D MPRAGE or 2D spin echo) of a subject; a *protocol family*
fixes them, so that subjects of two families differ the way two scanners' protocols do
(T1/T1C contrast and resolution, field-dependent relaxation, noise, ghosting).

:func:`plan_split` assigns every subject of a run one *role*, a seed and a family without
generating anything; the seeds of different roles come from disjoint ranges, so a test
subject can never be a pretraining or fine-tuning subject (the tests check this on the
shipped configs). :func:`write_family_subjects` writes a role's subjects and checks that each
was drawn with its family's T1 technique.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_FAMILIES",
    "ROLES",
    "Family",
    "SplitSubject",
    "parse_families",
    "plan_split",
    "write_family_subjects",
]


@dataclass(frozen=True)
class Family:
    """One protocol family: the engine's scanner and protocol draws held fixed.

    Attributes
    ----------
    name : str
        Short name (``siemens-3T-mprage``).
    vendor : str
        ``siemens``, ``ge`` or ``philips``.
    field_strength : float
        1.5 or 3.0 tesla.
    t1_kind : str
        ``mprage`` (3D IR gradient echo) or ``se`` (2D spin echo) for T1 and T1C.
    snr_scale : float
        Multiplies every series' drawn SNR.
    motion : float
        Largest motion-ghosting severity.
    bias_amplitude : float or None
        Log-amplitude of the receive-coil bias field of every subject (None: the engine draws
        0.05-0.25 per subject). Real scanners differ here: prescan-normalised head arrays are
        flat, 3 T body-coil and dielectric effects are not.
    slice_mm : float
        Through-plane thickness (FWHM, mm) of 2D slices: every series but a 3D MPRAGE T1/T1C is
        blurred along the slice (superior-inferior) axis by it, as 2D FLAIR and T2 at 5-6 mm are
        on many scanners; 0 keeps the volumes as rendered (3D acquisitions).
    """

    name: str
    vendor: str
    field_strength: float
    t1_kind: str
    snr_scale: float = 1.0
    motion: float = 0.0
    bias_amplitude: float | None = None
    slice_mm: float = 0.0

    def synth_kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`training.synth.generate_subject` that this family fixes."""
        return {"vendor": self.vendor, "field_strength": self.field_strength, "snr_scale": self.snr_scale,
                "motion": self.motion, "bias_amplitude": self.bias_amplitude}

    def thick_slices(self, images: dict[Any, np.ndarray], voxel_mm: float) -> None:
        """Blur ``images`` (sequence -> RAS volume, changed in place) along S by :attr:`slice_mm`.

        Parameters
        ----------
        images : dict
            A subject's images on its RAS grid (axis 2 is superior-inferior).
        voxel_mm : float
            The grid spacing.
        """
        if self.slice_mm <= 0:
            return
        from scipy.ndimage import gaussian_filter1d

        sigma = self.slice_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / float(voxel_mm)
        for seq, img in images.items():
            if self.t1_kind == "mprage" and str(getattr(seq, "value", seq)) in ("T1", "T1C"):
                continue
            images[seq] = gaussian_filter1d(np.asarray(img, dtype=np.float32), sigma, axis=2, mode="nearest")


#: Four families; the first is the labelled one unless ``[families] labelled`` says otherwise.
DEFAULT_FAMILIES: tuple[Family, ...] = (
    Family("siemens-3T-mprage", "siemens", 3.0, "mprage", 1.0, 0.0),
    Family("ge-1.5T-se", "ge", 1.5, "se", 0.7, 0.3),
    Family("philips-3T-se", "philips", 3.0, "se", 0.9, 0.15),
    Family("siemens-1.5T-mprage", "siemens", 1.5, "mprage", 0.6, 0.2),
)

#: Roles of a run's subjects; each has its own seed range (``seed + offset``).
ROLES: dict[str, int] = {
    "labelled": 0,  # the labelled pool (labelled family only); fine-tuning subsets come from here
    "test-same": 10_000,  # held-out test subjects of the labelled family
    "test-other": 11_000,  # held-out test subjects of every other family
    "unlabelled": 20_000,  # pretraining only, every family
    "validation": 30_000,  # for choosing settings: labelled family and the others
    "probe-train": 40_000,  # probe labels (sequence, TR/TE/flip): labelled family only
    "probe-test": 50_000,  # probe test series: every family
}
_ROLE_SPAN = 1_000  # seeds of one role: [seed + offset, seed + offset + span)


@dataclass(frozen=True)
class SplitSubject:
    """One planned subject: its role, seed, family and whether it has a tumour forced."""

    role: str
    seed: int
    family: str
    tumour: bool | None

    @property
    def subject_id(self) -> str:
        """The engine's subject id for this seed."""
        return f"synth-{self.seed:06d}"


def parse_families(table: Mapping[str, Any] | None) -> tuple[list[Family], str]:
    """The families of a config's ``[families]`` table and the labelled one's name.

    Parameters
    ----------
    table : mapping or None
        ``labelled`` (a family name) and optionally ``define`` (a list of tables with the
        :class:`Family` fields); without it :data:`DEFAULT_FAMILIES`.

    Returns
    -------
    tuple
        The families (labelled first) and the labelled family's name.

    Raises
    ------
    ValueError
        For an unknown labelled family, a bad definition or fewer than two families.
    """
    table = dict(table or {})
    if "define" in table:
        try:
            families = [Family(**{k: v for k, v in dict(d).items()}) for d in table["define"]]
        except TypeError as exc:
            raise ValueError(f"config key 'families.define': {exc}.") from None
    else:
        families = list(DEFAULT_FAMILIES)
    for fam in families:
        if fam.t1_kind not in ("mprage", "se"):
            raise ValueError(f"config key 'families.define': family {fam.name} has t1_kind {fam.t1_kind!r}; "
                             "use 'mprage' or 'se'.")
        if fam.slice_mm < 0 or (fam.bias_amplitude is not None and not 0 <= fam.bias_amplitude <= 1):
            raise ValueError(f"config key 'families.define': family {fam.name} needs slice_mm >= 0 and "
                             "bias_amplitude in [0, 1].")
    names = [f.name for f in families]
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError("config key 'families': give two or more families with distinct names.")
    labelled = str(table.get("labelled", names[0]))
    if labelled not in names:
        raise ValueError(f"config key 'families.labelled': {labelled!r} is not one of {names}.")
    families.sort(key=lambda f: f.name != labelled)
    return families, labelled


def _predicted_t1_kind(seed: int, tumour: bool | None) -> str:
    """The T1 technique the engine will draw for ``seed`` with a fixed vendor (verified after writing)."""
    rng = np.random.default_rng([seed, 1])
    if tumour is None:
        rng.random()
    return "mprage" if rng.random() < 0.5 else "se"


def plan_split(data: Mapping[str, Any], families: Sequence[Family], labelled: str) -> dict[str, list[SplitSubject]]:
    """Every subject of a run, by role, with disjoint seeds (nothing is generated).

    Within a role the seeds are walked upwards and kept when the engine will draw the
    family's T1 technique for them; families other than the labelled one take turns.

    Parameters
    ----------
    data : mapping
        The ``[data]`` table: ``seed``, ``labelled_subjects``, ``test_same_subjects``,
        ``test_other_subjects`` (per other family), ``unlabelled_subjects`` (per family),
        ``val_subjects`` (per family), ``probe_train_subjects``, ``probe_test_subjects``
        (per family).
    families : sequence of Family
        From :func:`parse_families`.
    labelled : str
        The labelled family's name.

    Returns
    -------
    dict
        Role -> subjects.

    Raises
    ------
    ValueError
        If a role would need more seeds than its range holds.
    """
    base = int(data.get("seed", 0))
    by_name = {f.name: f for f in families}
    others = [f.name for f in families if f.name != labelled]
    every = [f.name for f in families]
    wanted: dict[str, tuple[list[str], int, bool | None]] = {
        "labelled": ([labelled], int(data.get("labelled_subjects", 0)), True),
        "test-same": ([labelled], int(data.get("test_same_subjects", 0)), True),
        "test-other": (others, int(data.get("test_other_subjects", 0)), True),
        "unlabelled": (every, int(data.get("unlabelled_subjects", 0)), None),
        "validation": (every, int(data.get("val_subjects", 0)), True),
        "probe-train": ([labelled], int(data.get("probe_train_subjects", 0)), True),
        "probe-test": (every, int(data.get("probe_test_subjects", 0)), True),
    }
    plan: dict[str, list[SplitSubject]] = {}
    for role, (fams, per, tumour) in wanted.items():
        if role in ("labelled", "test-same", "probe-train"):
            queue = fams * per  # one family: ``per`` subjects
        else:
            queue = [f for _ in range(per) for f in fams]  # ``per`` subjects of each family, interleaved
        seed = base + ROLES[role]
        out: list[SplitSubject] = []
        for fam in queue:
            while _predicted_t1_kind(seed, tumour) != by_name[fam].t1_kind:
                seed += 1
            out.append(SplitSubject(role, seed, fam, tumour))
            seed += 1
        if seed > base + ROLES[role] + _ROLE_SPAN:
            raise ValueError(f"config key 'data': role {role} needs more than {_ROLE_SPAN} seeds; ask for fewer subjects.")
        plan[role] = out
    return plan


def write_family_subjects(folder: Path, subjects: Sequence[SplitSubject], families: Sequence[Family],
                          voxel_mm: float, sequences: Sequence[str]) -> list[str]:
    """Write planned subjects (cached: a folder's ``subjects.json`` lists what it holds).

    Parameters
    ----------
    folder : Path
        Output folder (one sub-folder per subject).
    subjects : sequence of SplitSubject
        From :func:`plan_split`.
    families : sequence of Family
        Their families.
    voxel_mm : float
        Grid spacing.
    sequences : sequence of str
        Sequences to synthesise.

    Returns
    -------
    list of str
        The subject folders, in order.

    Raises
    ------
    ValueError
        If the engine drew another T1 technique than the family's (the engine changed).
    """
    import importlib

    from dicom_node.sequences import parse_sequence_label

    synth = importlib.import_module("training.synth")
    by_name = {f.name: f for f in families}
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "subjects.json"
    # the family's definition is part of what a folder holds: a changed family rewrites it
    planned = [asdict(s) | {"family_definition": asdict(by_name[s.family])} for s in subjects]
    if listing.is_file():
        cached = json.loads(listing.read_text())
        if isinstance(cached, dict) and cached.get("planned") == planned and cached.get("voxel_mm") == voxel_mm:
            return list(cached["paths"])
    labels = [parse_sequence_label(s) for s in sequences]
    paths = []
    for s in subjects:
        fam = by_name[s.family]
        subject = synth.generate_subject(s.seed, voxel_mm=voxel_mm, sequences=labels, tumour=s.tumour,
                                         **fam.synth_kwargs())
        drawn = subject.params.get("t1_kind")
        if drawn != fam.t1_kind:
            raise ValueError(f"the engine drew T1 technique {drawn!r} for seed {s.seed}, not family {fam.name}'s "
                             f"{fam.t1_kind!r}; training.pretrain.families must follow the engine's draws.")
        fam.thick_slices(subject.images, voxel_mm)
        subject.params["protocol_family"] = fam.name
        subject.params["family_slice_mm"] = fam.slice_mm
        subject.params["split_role"] = s.role
        paths.append(str(synth.write_subject(subject, folder)))
    listing.write_text(json.dumps({"planned": planned, "voxel_mm": voxel_mm, "paths": paths}, indent=1) + "\n")
    return paths
