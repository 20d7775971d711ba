"""One synthetic subject: anatomy, tumour, contrasts, and the files written for it."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.sequences import SequenceLabel, parse_sequence_label
from training.synth.acquisition import (
    AcquiredSeries,
    AcquiredStack,
    bias_field,
    motion_ghosting,
    quantise,
    resample_with_labels,
    rician,
    stack_affine,
)
from training.synth.anatomy import HEAD_CENTRE_RAS, draw_pose, output_grid, sampling_grid, warp_maps
from training.synth.lesions import TumourSpec, draw_tumours, paint_tumours
from training.synth.protocols import Protocol, draw_protocol
from training.synth.render import MAP_TISSUES, mix, tissue_signals
from training.synth.templates import ANATOMY_SOURCES, MAP_NAMES, load_templates, source_files
from training.synth.tissue import Tissue, gd_concentration_mm, tissue_parameters

__all__ = [
    "DEFAULT_SEQUENCES",
    "GENERATOR_VERSION",
    "SYNTH_SEQUENCES",
    "VENDORS",
    "SyntheticSubject",
    "generate_subject",
    "write_subject",
]

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.3"  # 1.1: anatomy source drawn per subject (MNI152 or CAT12), chunked noise streams;
# 1.2: deep grey matter rendered as a grey/white mixture; 1.3: slabs of grey matter thicker than a cortex
# rendered as folded cortex (sulcal CSF and gyral white matter; training.synth.templates)
VENDORS: tuple[str, ...] = ("siemens", "ge", "philips")
DEFAULT_SEQUENCES: tuple[SequenceLabel, ...] = (SequenceLabel.T1, SequenceLabel.T1C, SequenceLabel.T2, SequenceLabel.FLAIR)
#: Every label the generator can produce, in series-number order.
SYNTH_SEQUENCES: tuple[SequenceLabel, ...] = (
    SequenceLabel.LOCALIZER, SequenceLabel.T1, SequenceLabel.T2, SequenceLabel.FLAIR, SequenceLabel.PD,
    SequenceLabel.DWI, SequenceLabel.ADC, SequenceLabel.SWI, SequenceLabel.T1C,
)


@dataclass
class SyntheticSubject:
    """A generated subject on the template grid (RAS), with its acquisition protocols.

    Attributes
    ----------
    subject_id : str
        ``"synth-<seed>"`` unless given.
    seed : int
        The seed that reproduces it.
    images : dict
        float32 image per :class:`SequenceLabel` (DWI holds the b=1000 trace image;
        ADC in 1e-6 mm^2/s), shape ``(ni, nj, nk)``.
    affine : numpy.ndarray
        4x4 voxel-to-RAS of the grid.
    labels : numpy.ndarray
        uint8 BraTS labels (0, 1 necrotic core, 2 oedema, 3 enhancing).
    tissue : numpy.ndarray
        uint8 hard tissue labels (:class:`training.synth.tissue.Tissue` values).
    params : dict
        Every parameter and the seed (JSON-ready).
    protocols : dict
        :class:`Protocol` per sequence (what the DICOM headers say).
    extras : dict
        Further images: ``"DWI_b0"``.
    """

    subject_id: str
    seed: int
    images: dict[SequenceLabel, np.ndarray]
    affine: np.ndarray
    labels: np.ndarray
    tissue: np.ndarray
    params: dict[str, Any]
    protocols: dict[SequenceLabel, Protocol] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def has_tumour(self) -> bool:
        """Whether any voxel is labelled tumour."""
        return bool(self.labels.any())

    def acquire(self, sequence: SequenceLabel | str) -> AcquiredSeries:
        """Resample one sequence onto the grid the scanner would have written.

        Parameters
        ----------
        sequence : SequenceLabel or str
            A sequence present in :attr:`images`.

        Returns
        -------
        AcquiredSeries
            Stacks of quantised slices with labels resampled (nearest) onto them.
        """
        seq = parse_sequence_label(str(sequence))
        if seq not in self.protocols:
            raise KeyError(f"Subject {self.subject_id} has no {seq.value} series; it has {', '.join(s.value for s in self.protocols)}.")
        proto = self.protocols[seq]
        centre = np.asarray(self.params["fov_centre_ras"], dtype=np.float64)
        series = AcquiredSeries(sequence=seq.value, protocol=proto)
        if proto.kind == "localizer":
            for plane in ("sagittal", "coronal", "axial"):
                aff, shape = stack_affine(proto, plane, centre, 0.0)
                series.stacks.append(self._stack(self.images[seq], aff, shape, proto, key=plane))
            return series
        aff, shape = stack_affine(proto, proto.plane, centre, float(self.params["angulation_deg"]))
        if proto.kind == "dwi":
            series.stacks.append(self._stack(self.extras["DWI_b0"], aff, shape, proto, key="b0", b_value=0.0))
            series.stacks.append(self._stack(self.images[seq], aff, shape, proto, key="b1000", b_value=1000.0))
        else:
            series.stacks.append(self._stack(self.images[seq], aff, shape, proto))
        return series

    def _stack(self, image: np.ndarray, aff: np.ndarray, shape: tuple[int, int, int], proto: Protocol,
               key: str = "", b_value: float | None = None) -> AcquiredStack:
        data, labels = resample_with_labels(image, self.labels, self.affine, aff, shape,
                                            thickness_mm=proto.slice_thickness_mm, pixel_mm=proto.pixel_mm)
        return AcquiredStack(data=quantise(data), labels=labels, affine=aff, key=key, b_value=b_value)


def _seq_rng(seed: int, seq: SequenceLabel, purpose: int) -> np.random.Generator:
    """A generator per (seed, sequence, purpose), independent of which sequences are asked for."""
    code = list(SequenceLabel).index(seq)
    return np.random.default_rng([seed, 1000 + code, purpose])


def generate_subject(
    seed: int,
    *,
    field_strength: float = 3.0,
    tumour: bool | None = None,
    tumour_free_fraction: float = 0.2,
    sequences: Sequence[SequenceLabel | str] = DEFAULT_SEQUENCES,
    voxel_mm: float = 1.0,
    vendor: str | None = None,
    snr_scale: float = 1.0,
    bias_amplitude: float | None = None,
    deformation_mm: float = 2.5,
    motion: float = 0.0,
    subject_id: str | None = None,
    anatomy: str | None = None,
) -> SyntheticSubject:
    """Generate one subject: random anatomy, optional tumour, physics-based contrasts.

    Parameters
    ----------
    seed : int
        Makes the subject reproducible bit for bit.
    field_strength : float
        1.5 or 3.0 tesla.
    tumour : bool or None
        Force a tumour (True) or none (False); None draws, tumour-free with probability
        ``tumour_free_fraction``.
    tumour_free_fraction : float
        Probability of a tumour-free subject when ``tumour`` is None.
    sequences : sequence of SequenceLabel or str
        Any of T1, T1C, T2, FLAIR, PD, DWI, ADC, SWI, LOCALIZER.
    voxel_mm : float
        Output grid spacing (the template field of view is kept).
    vendor : str or None
        ``"siemens"``, ``"ge"`` or ``"philips"``; None draws one.
    snr_scale : float
        Multiplies every series' drawn SNR.
    bias_amplitude : float or None
        Log-amplitude of the bias field; None draws 0.05-0.25.
    deformation_mm : float
        Typical size of the smooth anatomical deformation.
    motion : float
        Largest motion-ghosting severity (0 = none, 1 = strong); each series draws its
        own severity in ``[0, motion]`` (phase encoding along the anterior-posterior axis).
    subject_id : str or None
        Defaults to ``"synth-<seed:06d>"``.
    anatomy : str or None
        Anatomy source of the brain: ``"mni152"`` (ICBM 2009a tissue maps) or ``"cat12"``
        (CAT12 Geodesic Shooting template with atlas ventricles); None draws one per
        subject with equal probability (from its own seeded stream, so the other draws
        do not change). Recorded in ``params["anatomy_source"]``.

    Returns
    -------
    SyntheticSubject
        Images, labels, tissue map, protocols and parameters.

    Raises
    ------
    ValueError
        For an unknown vendor or sequence, or parameters out of range.
    """
    seqs = [parse_sequence_label(str(s)) for s in sequences]
    bad = [s.value for s in seqs if s not in SYNTH_SEQUENCES]
    if bad:
        raise ValueError(f"Cannot synthesise {', '.join(bad)}; choose from {', '.join(s.value for s in SYNTH_SEQUENCES)}.")
    if not 0.0 <= tumour_free_fraction <= 1.0:
        raise ValueError(f"tumour_free_fraction must lie in [0, 1]; got {tumour_free_fraction}.")
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed}.")
    if not 0.5 <= float(voxel_mm) <= 8.0:
        raise ValueError(f"voxel_mm must lie between 0.5 and 8 mm; got {voxel_mm}.")
    if not 0.0 <= motion <= 1.0:
        raise ValueError(f"motion must lie in [0, 1]; got {motion}.")
    if field_strength not in (1.5, 3.0):
        raise ValueError(f"field_strength must be 1.5 or 3.0 tesla; got {field_strength}.")
    if anatomy is None:
        source = ANATOMY_SOURCES[int(np.random.default_rng([seed, 8]).integers(len(ANATOMY_SOURCES)))]
    elif anatomy.lower() in ANATOMY_SOURCES:
        source = anatomy.lower()
    else:
        raise ValueError(f"Unknown anatomy source {anatomy!r}; expected one of {', '.join(ANATOMY_SOURCES)}.")
    rng = np.random.default_rng([seed, 1])
    chosen_vendor = str(rng.choice(VENDORS)) if vendor is None else vendor.lower()
    if chosen_vendor not in VENDORS:
        raise ValueError(f"Unknown vendor {vendor!r}; expected one of {', '.join(VENDORS)}.")
    has_tumour = bool(rng.random() >= tumour_free_fraction) if tumour is None else bool(tumour)
    t1_kind = "mprage" if rng.random() < 0.5 else "se"
    angulation = float(rng.uniform(0.0, 12.0))
    gd_scale = float(rng.uniform(0.7, 1.3))
    bias_amp = float(rng.uniform(0.05, 0.25)) if bias_amplitude is None else float(bias_amplitude)

    templates = load_templates(float(voxel_mm), source)
    shape, affine = output_grid(templates.shape, templates.affine, float(voxel_mm))
    pose = draw_pose(np.random.default_rng([seed, 2]), deformation_mm=deformation_mm)
    specs: list[TumourSpec] = []
    if has_tumour:
        specs, pose = draw_tumours(np.random.default_rng([seed, 3]), templates, pose)
    grid = sampling_grid(shape, affine, templates.shape, templates.affine, pose)
    maps = warp_maps(templates.brain, templates.head, grid, templates.brain_box)
    del grid
    csf, gm, wm = maps[0], maps[1], maps[2]
    labels, tumour_frac, tumour_box = paint_tumours(specs, affine, gm, wm, csf)
    texture = None
    if tumour_frac is not None:
        from training.synth.lesions import smooth_noise

        texture = 1.0 + 0.12 * smooth_noise(np.random.default_rng([seed, 7]), tumour_frac.shape[1:], ctrl=10)
    tparams = tissue_parameters(field_strength, np.random.default_rng([seed, 4]))
    gd = gd_concentration_mm(gd_scale)
    bias = bias_field(shape, bias_amp, np.random.default_rng([seed, 5]))
    fov_centre = np.asarray(HEAD_CENTRE_RAS) + np.asarray(pose.translation_mm) + np.random.default_rng([seed, 6]).uniform(-5, 5, 3)

    protocols: dict[SequenceLabel, Protocol] = {}
    images: dict[SequenceLabel, np.ndarray] = {}
    extras: dict[str, np.ndarray] = {}
    render_info: dict[str, dict[str, float]] = {}
    wanted = [s for s in SYNTH_SEQUENCES if s in seqs]
    # First the protocols and per-tissue signals of every image, then one pass over the
    # tissue maps renders them all, then bias, motion and noise per image.
    renders: list[tuple[SequenceLabel, float, np.ndarray]] = []  # (sequence, b-value, signals * gain)
    noise: dict[SequenceLabel, tuple[float, float, int]] = {}  # sigma, motion severity, code
    for seq in wanted:
        prng = _seq_rng(seed, seq, 1)
        src_seq = SequenceLabel.DWI if seq is SequenceLabel.ADC else seq
        proto = draw_protocol(_seq_rng(seed, src_seq, 1) if seq is SequenceLabel.ADC else prng, src_seq,
                              vendor=chosen_vendor, field_strength=field_strength, t1_kind=t1_kind,
                              csf_t1_ms=float(tparams.t1[Tissue.CSF]))
        if seq is SequenceLabel.ADC:
            from dataclasses import replace

            proto = replace(proto, sequence=SequenceLabel.ADC.value, kind="adc")
        protocols[seq] = proto
        if seq is SequenceLabel.ADC and SequenceLabel.DWI in wanted:
            continue  # derived from the DWI images below
        code = list(SequenceLabel).index(src_seq)
        target = float(_seq_rng(seed, src_seq, 3).uniform(1500.0, 3500.0))
        b_values = (0.0, 1000.0) if proto.kind in ("dwi", "adc") else (0.0,)
        sig0 = tissue_signals(proto, tparams, gd, b_value=0.0)
        gain = target / float(np.max(sig0))
        sigma = gain * float(sig0[Tissue.WM]) / (proto.snr * snr_scale)
        motion_severity = float(_seq_rng(seed, src_seq, 4).uniform(0.0, motion)) if motion > 0 else 0.0
        for b in b_values:
            sig = sig0 if b == 0.0 else tissue_signals(proto, tparams, gd, b_value=b)
            renders.append((seq, b, sig * gain))
        noise[seq] = (sigma, motion_severity, code)
        render_info[seq.value] = {"gain": gain, "noise_sigma": sigma, "target_max": target, "motion": motion_severity}
    acquired: dict[tuple[SequenceLabel, float], np.ndarray] = {}
    mixed = mix(maps, tumour_frac, np.stack([r[2] for r in renders]), tumour_box, texture) if renders else maps[:0]
    for i, (seq, b, _) in enumerate(renders):
        sigma, motion_severity, code = noise[seq]
        img = mixed[i]
        img *= bias
        if motion_severity > 0:
            img = motion_ghosting(img, motion_severity, np.random.default_rng([seed, 3000 + code]), axis=1,
                                  voxel_mm=float(voxel_mm))
        acquired[(seq, b)] = rician(img, sigma, [seed, 2000 + code, int(b)])
    for seq in wanted:
        if seq is SequenceLabel.DWI:
            extras["DWI_b0"], images[seq] = acquired[(seq, 0.0)], acquired[(seq, 1000.0)]
        elif seq is SequenceLabel.ADC:
            src = SequenceLabel.DWI if SequenceLabel.DWI in wanted else seq
            images[seq] = _adc(acquired[(src, 0.0)], acquired[(src, 1000.0)])
        else:
            images[seq] = acquired[(seq, 0.0)]

    tissue = _hard_tissue(maps, labels)
    sid = subject_id or f"synth-{seed:06d}"
    params: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "subject_id": sid,
        "field_strength": field_strength,
        "vendor": chosen_vendor,
        "voxel_mm": float(voxel_mm),
        "shape": list(shape),
        "affine": affine.tolist(),
        "t1_kind": t1_kind,
        "tumour": has_tumour and bool(labels.any()),
        "tumours": [s.as_dict() for s in specs],
        "pose": pose.as_dict(),
        "angulation_deg": angulation,
        "fov_centre_ras": [float(v) for v in fov_centre],
        "bias_amplitude": bias_amp,
        "gd_scale": gd_scale,
        "snr_scale": snr_scale,
        "motion": motion,
        "deformation_mm": deformation_mm,
        "tissue_parameters": tparams.as_dict(),
        "gd_concentration_mm": {t.name: float(gd[t]) for t in Tissue if gd[t] > 0},
        "template_maps": list(MAP_NAMES),
        "anatomy_source": source,
        "template_files": source_files(source),
        "sequences": {s.value: protocols[s].as_dict() for s in wanted},
        "rendering": render_info,
    }
    return SyntheticSubject(subject_id=sid, seed=int(seed), images=images, affine=affine, labels=labels,
                            tissue=tissue, params=params, protocols=protocols, extras=extras)


def _adc(b0: np.ndarray, b1000: np.ndarray) -> np.ndarray:
    """ADC map (1e-6 mm^2/s) from b=0 and b=1000 images; zero where the signal is noise."""
    floor = np.float32(0.05 * float(np.percentile(b0[:: 4, :: 4, :: 4], 99)))
    valid = (b0 > floor) & (b1000 > 0)
    ratio = np.where(valid, b0 / np.maximum(b1000, np.float32(1e-3)), np.float32(1.0))
    adc = np.log(np.maximum(ratio, np.float32(1.0))) * np.float32(1000.0)
    adc = np.clip(adc, 0.0, 4000.0).astype(np.float32)
    adc[~valid] = 0.0
    return adc


def _hard_tissue(maps: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Most likely tissue per voxel, air where the remainder ``1 - sum`` is largest; tumour
    labels override (Tissue values). Ties go to the earlier channel, air first. Computed
    in slabs along the first axis to bound the temporaries."""
    import torch

    codes = torch.tensor([tissue.value for tissue in MAP_TISSUES], dtype=torch.uint8)
    zero = torch.zeros((), dtype=torch.uint8)
    best = np.empty(maps.shape[1:], dtype=np.uint8)
    step = max(1, -(-maps.shape[1] // 4))
    for a in range(0, maps.shape[1], step):
        t = torch.from_numpy(maps[:, a: a + step])
        best_val, best_idx = t.max(dim=0)
        air = torch.sub(1.0, t.sum(dim=0))
        best[a: a + step] = torch.where(best_val > air, codes[best_idx], zero).numpy()
    best[labels == 1] = Tissue.NECROSIS
    best[labels == 2] = Tissue.OEDEMA
    best[labels == 3] = Tissue.ENHANCING
    return best


def write_subject(subject: SyntheticSubject, out_dir: Path | str, *, dicom: bool = False, nifti: bool = True) -> Path:
    """Write a subject's NIfTI files, labels, parameters and (optionally) a DICOM study.

    Layout: ``<out>/<subject_id>/<SEQ>.nii.gz``, ``DWI_b0.nii.gz`` with DWI,
    ``labels.nii.gz``, ``tissue.nii.gz``, ``params.json`` and with ``dicom``
    ``dicom/<NN>_<SEQ>/IM_0001.dcm ...``.

    Parameters
    ----------
    subject : SyntheticSubject
        From :func:`generate_subject`.
    out_dir : Path or str
        Parent folder.
    dicom : bool
        Also write a DICOM study (one series per sequence).
    nifti : bool
        Write the NIfTI images and label map.

    Returns
    -------
    Path
        The subject's folder.
    """
    import nibabel as nib

    folder = Path(out_dir) / subject.subject_id
    folder.mkdir(parents=True, exist_ok=True)
    if nifti:
        for seq, img in subject.images.items():
            nib.save(nib.Nifti1Image(img, subject.affine), str(folder / f"{seq.value}.nii.gz"))
        for key, img in subject.extras.items():
            nib.save(nib.Nifti1Image(img, subject.affine), str(folder / f"{key}.nii.gz"))
        nib.save(nib.Nifti1Image(subject.labels, subject.affine), str(folder / "labels.nii.gz"))
        nib.save(nib.Nifti1Image(subject.tissue, subject.affine), str(folder / "tissue.nii.gz"))
    (folder / "params.json").write_text(json.dumps(subject.params, indent=2, sort_keys=True))
    if dicom:
        from training.synth.dicom_writer import write_study

        write_study(subject, folder / "dicom")
    log.info("wrote synthetic subject %s to %s", subject.subject_id, folder)
    return folder
