"""Reading and writing cases: BraTS folders (2018-21 and 2023+ names), NIfTI volumes and labels.

Which cases a path holds (manifests, cohort folders) is :mod:`core.cases`.

In memory a case is channels-first float32 ``(4, X, Y, Z)`` in the order of
``core.sequences.SEQUENCES`` with an availability vector and canonical labels.

Policies (also in the README):

* A missing secondary sequence (file absent, empty manifest path, or an all-zero volume)
  becomes a zero volume on the same grid and ``available`` is False for it. A missing or
  all-zero T1c rejects the case: T1c is the reference sequence.
* Affines: files of one case with the same shape and voxel size are taken to be voxel
  aligned (real BraTS headers often disagree by a flip or an offset). T1c's affine is used
  for the case and a warning names each file whose affine differs. Different shapes or voxel
  sizes reject the case.
* Spacing: a grid that is not 1 mm isotropic is resampled to 1 mm (linear for images,
  nearest for labels) and the original grid is kept in ``Case.original_grid`` so predictions
  can be returned on it.
* Sizes: a file's header is checked before its voxels are read (dimensions x data type
  against ``MAX_VOLUME_BYTES`` and against the file's length) and the 1 mm grid a case is
  read onto against ``MAX_CASE_VOXELS``, so a lying or huge header is a CaseError, never a
  MemoryError.
* Scoring: predictions are scored on the grid the case was read from (the reference as
  annotated, never resampled); :func:`scoring_reference` gives it.
* Links: with a ``root`` (the app's data root) every file read, after resolving links, must
  lie under it. Without one (the command line) links are followed wherever they point. A
  sequence file that is there by name but is a broken link or cannot be read is an error,
  not a missing sequence.
* Labels: the scheme is read from the manifest's ``label_scheme`` column when given, else
  detected from the values present (4 -> brats2020, 3 -> brats2023, only 1 -> tc). When three
  tumour labels are present their meaning is checked against the anatomy of a glioblastoma
  (necrosis enclosed by enhancing tumour, oedema outermost, enhancing brightest on T1c); if
  both cues agree on a different assignment it is used and a warning says so.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from core.labels import LabelError, to_canonical
from core.sequences import ENHANCING, LABEL_SCHEMES, REFERENCE_SEQUENCE, SEQUENCES

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SPACING_TOLERANCE_MM = 1e-3
AFFINE_TOLERANCE_MM = 1e-3
MAX_VOLUME_BYTES = 512 * 2**20  # voxel data of one file, as its header declares it
MAX_CASE_VOXELS = 2**25  # the grid a case is read onto (4 float32 sequences: 512 MiB)
# Deflate cannot compress by more than 1032:1, so a .nii.gz of n bytes holds at most this much.
_MAX_DEFLATE_RATIO = 1032

# File-name keys of BraTS 2018-2021 (t1, t1ce, t2, flair, seg) and 2023+ (t1n, t1c, t2w, t2f).
_FILE_KEYS = {
    "t1": "t1", "t1n": "t1",
    "t1ce": "t1c", "t1c": "t1c", "t1gd": "t1c",
    "t2": "t2", "t2w": "t2",
    "flair": "flair", "t2f": "flair",
    "seg": "seg",
}  # fmt: skip
FILE_PATTERN = re.compile(
    r"^(?:(?P<stem>.*)[_-])?(?P<key>" + "|".join(sorted(_FILE_KEYS, key=len, reverse=True)) + r")\.nii(?:\.gz)?$",
    re.IGNORECASE,
)


class CaseError(ValueError):
    """A case cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape and 4x4 voxel-to-world affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm (column norms of the affine)."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(0)))


@dataclass
class CaseSource:
    """Where a case's files are. ``paths[seq]`` is None for a missing sequence."""

    case_id: str
    paths: dict[str, Path | None]
    seg: Path | None = None
    label_scheme: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    origin: str = ""  # the folder or "manifest.csv row N", for messages
    root: Path | None = None  # when set, every file must resolve under it (the app's data root)


@dataclass
class Case:
    """One case in the in-memory convention of DESIGN.md section 4."""

    case_id: str
    images: np.ndarray  # (4, X, Y, Z) float32, channel order SEQUENCES
    available: np.ndarray  # (4,) bool
    labels: np.ndarray | None  # (X, Y, Z) uint8 canonical labels, or None
    affine: np.ndarray  # (4, 4)
    spacing: tuple[float, float, float]
    label_scheme: str | None = None
    warnings: list[str] = field(default_factory=list)
    header: nib.Nifti1Header | None = None  # T1c's header, for writing labels
    original_grid: Grid | None = None  # set when the case was resampled to 1 mm
    original_labels: np.ndarray | None = None  # the reference on original_grid (for scoring)
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def missing(self) -> frozenset[str]:
        return frozenset(s for s, ok in zip(SEQUENCES, self.available) if not ok)


# --------------------------------------------------------------------------- finding files


def resolve_root(root: str | Path | None) -> Path | None:
    return None if root is None else Path(root).resolve()


def confine(path: str | Path, root: Path | None, role: str = "file") -> Path:
    """``path`` itself, after checking that it lies under ``root`` once links are resolved.

    Raises:
        CaseError: it resolves outside ``root`` (the message names both).
    """
    path = Path(path)
    if root is not None:
        real = path.resolve()
        if not real.is_relative_to(root):
            raise CaseError(f"{path}: {role} resolves to {real}, outside the data root {root}")
    return path


def _check_present(path: Path, role: str) -> None:
    """A file there by name must be a readable regular file (not a broken link, not a folder)."""
    if path.is_symlink() and not path.exists():
        raise CaseError(f"{path}: {role} file is a broken link (to {os.readlink(path)})")
    if not path.exists():
        raise CaseError(f"{path}: {role} file not found")
    if not path.is_file():
        raise CaseError(f"{path}: {role} is not a regular file")
    if not os.access(path, os.R_OK):
        raise CaseError(f"{path}: {role} file cannot be read (permission denied)")


def find_case_files(folder: str | Path, root: str | Path | None = None) -> CaseSource:
    """Identify the sequence and label files of one case folder.

    With ``root``, the folder and every file named like a sequence must resolve under it.

    Raises:
        CaseError: the folder does not exist or leaves ``root``, holds no recognised NIfTI
            file, holds two files for one sequence, or one named like a sequence that is a
            broken link, not a regular file or unreadable (never taken as a missing sequence).
    """
    folder, root = Path(folder), resolve_root(root)
    confine(folder, root, "case folder")
    if not folder.is_dir():
        raise CaseError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        match = FILE_PATTERN.match(path.name)
        if not match:
            continue
        key = _FILE_KEYS[match["key"].lower()]
        _check_present(path, key)
        confine(path, root, key)
        if key in found:
            raise CaseError(f"{folder}: both {found[key].name} and {path.name} look like the {key} file")
        found[key] = path
    if not found:
        names = ", ".join(p.name for p in sorted(folder.iterdir())[:6]) or "nothing"
        raise CaseError(
            f"{folder}: no BraTS-named NIfTI files (expected *_t1ce.nii.gz or *-t1c.nii.gz ...; found {names})"
        )
    return CaseSource(
        case_id=folder.name,
        paths={s: found.get(s) for s in SEQUENCES},
        seg=found.get("seg"),
        origin=str(folder),
        root=root,
    )


# --------------------------------------------------------------------------- volumes


def _size(n: int) -> str:
    """Bytes in words: 1.2 kB, 35.7 MB, 4.0 TB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_source(source: CaseSource) -> None:
    """Check that every file a source names is there, readable and (with ``source.root``)
    under the root once links are resolved, before anything reads or hashes it.

    Raises:
        CaseError: the first file that fails, named.
    """
    for role, path in (*source.paths.items(), ("segmentation", source.seg)):
        if path is not None:
            confine(path, source.root, role)
            _check_present(Path(path), role)


def _open_volume(path: Path, role: str, root: Path | None = None) -> nib.Nifti1Image:
    """Open one NIfTI file and check its header, reading no voxels.

    Checked: under ``root``; present and readable; dimensions (3-D, or 4-D with one volume);
    voxel data (dimensions x data type) within ``MAX_VOLUME_BYTES`` and within what the file
    can hold (uncompressed: its length; gzip: 1032 x its length, deflate's limit).
    """
    confine(path, root, role)
    _check_present(path, role)
    length = path.stat().st_size
    if length == 0:
        raise CaseError(f"{path}: {role} file is empty (0 bytes)")
    try:
        image = nib.load(str(path))
        shape = tuple(int(n) for n in image.shape)
        dtype = np.dtype(image.get_data_dtype())
        offset = int(image.header.get("vox_offset", 0) or 0)
    except Exception as exc:  # nibabel raises many types for corrupt or truncated files
        raise CaseError(f"{path}: {role} file is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    volume = shape[:3] if len(shape) == 4 and shape[3] == 1 else shape
    if len(volume) != 3:
        raise CaseError(f"{path}: {role} has shape {shape}; expected a 3-D volume")
    if math.prod(volume) == 0:
        raise CaseError(f"{path}: {role} has no voxels (shape {shape})")
    needed = math.prod(shape) * dtype.itemsize
    if needed > MAX_VOLUME_BYTES:
        raise CaseError(f"{path}: {role} header declares {shape} {dtype} voxels = {_size(needed)}; "
                        f"the limit is {_size(MAX_VOLUME_BYTES)}")  # fmt: skip
    compressed = path.name.lower().endswith(".gz")
    room = length * _MAX_DEFLATE_RATIO if compressed else length - offset
    if needed > room:
        holds = f"{_size(length)} (gzip: at most {_size(room)} unpacked)" if compressed else _size(length)
        raise CaseError(f"{path}: {role} header declares {shape} {dtype} voxels = {_size(needed)} but the file "
                        f"holds {holds}; it is truncated or its header is wrong")  # fmt: skip
    return image


def _read_data(path: Path, role: str, image: nib.Nifti1Image) -> np.ndarray:
    """The voxels of an image from :func:`_open_volume`; 4-D with a single volume is squeezed."""
    try:
        data = np.asanyarray(image.dataobj)
    except MemoryError:
        raise CaseError(f"{path}: {role} does not fit in memory ({image.shape})") from None
    except Exception as exc:  # nibabel raises many types for corrupt or truncated files
        raise CaseError(f"{path}: {role} file is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    return data[..., 0] if data.ndim == 4 else data


def _load_volume(path: Path, role: str, root: Path | None = None) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Load one 3-D volume after :func:`_open_volume`'s checks."""
    image = _open_volume(Path(path), role, root)
    return _read_data(Path(path), role, image), image


def _open_shape(image: nib.Nifti1Image) -> tuple[int, int, int]:
    return tuple(int(n) for n in image.shape[:3])


def _spacing(image: nib.Nifti1Image) -> tuple[float, float, float]:
    return tuple(float(z) for z in image.header.get_zooms()[:3])


def _shape_at_1mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[int, int, int]:
    return tuple(int(np.floor((n - 1) * s + 1e-6)) + 1 for n, s in zip(shape, spacing))


def _check_grid_size(path: Path, shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    """The grid a case is read onto (1 mm when resampled) must hold at most MAX_CASE_VOXELS."""
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise CaseError(f"{path}: voxel size {spacing} mm; expected three positive sizes")
    resampled = not np.allclose(spacing, 1.0, atol=SPACING_TOLERANCE_MM)
    target = _shape_at_1mm(shape, spacing) if resampled else tuple(shape)
    voxels = math.prod(target)
    if voxels > MAX_CASE_VOXELS:
        how = f"voxel size {'x'.join(f'{s:g}' for s in spacing)} mm resampled to 1 mm gives" if resampled else "is"
        raise CaseError(f"{path}: shape {tuple(shape)} {how} {target} = {voxels:,} voxels "
                        f"({_size(16 * voxels)} for four sequences); the limit is {MAX_CASE_VOXELS:,}")  # fmt: skip


def _resample_to_1mm(volume: np.ndarray, spacing: tuple[float, ...], order: int) -> np.ndarray:
    """Resample a volume on a grid of ``spacing`` mm to 1 mm, keeping voxel 0 in place."""
    spacing_arr = np.asarray(spacing, dtype=float)
    shape = _shape_at_1mm(volume.shape, spacing_arr)
    return ndimage.affine_transform(
        volume, np.diag(1.0 / spacing_arr), output_shape=shape, order=order, mode="nearest", prefilter=False
    )


def resample_to_original(volume: np.ndarray, case: Case, order: int) -> np.ndarray:
    """Map a volume on a resampled case's 1 mm grid back to the grid the case was read from.

    Returns ``volume`` unchanged when the case was not resampled. ``order`` 0 for labels.
    """
    grid = case.original_grid
    if grid is None:
        return volume
    return ndimage.affine_transform(volume, np.diag(grid.spacing), output_shape=grid.shape, order=order, mode="nearest",
                                    prefilter=False).astype(volume.dtype)  # fmt: skip


def prediction_to_original(labels: np.ndarray, probs: np.ndarray | None,
                           case: Case) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """A prediction on the grid the case was read from (unchanged when it was not resampled).

    Args:
        labels: (X, Y, Z) uint8 labels on the case's 1 mm grid (nearest-neighbour back).
        probs: (C, X, Y, Z) float32 class probabilities on that grid (linear back), or None.
    """
    if case.original_grid is None:
        return labels, probs
    labels = resample_to_original(labels, case, order=0)
    if probs is not None:
        probs = np.stack([resample_to_original(p, case, order=1) for p in probs])
    return labels, probs


def scoring_reference(case: Case) -> tuple[np.ndarray | None, tuple[float, float, float]]:
    """The reference labels and voxel size in mm that predictions are scored against.

    Always the grid the case was read from: the reference as annotated (never resampled),
    which is the grid :func:`core.infer.predict_volume` returns labels on and the CLI writes.
    """
    if case.original_grid is None:
        return case.labels, case.spacing
    return case.original_labels, case.original_grid.spacing


def scoring_grid_words(case: Case) -> str:
    """Which grid :func:`scoring_reference` scores on, in words (for reports and the app)."""
    grid = case.original_grid
    shape, spacing = (case.shape, case.spacing) if grid is None else (grid.shape, grid.spacing)
    size = " x ".join(f"{s:g}" for s in spacing)
    return f"the case's own grid ({size} mm, {' x '.join(map(str, shape))} voxels), as in its files"


def _canonical_labels(data: np.ndarray, path: Path, scheme: str | None, t1c: np.ndarray | None, warnings: list[str]):
    """:func:`core.labels.to_canonical` with the file named in errors and warnings."""
    try:
        labels, name, notes = to_canonical(data, scheme, t1c)
    except LabelError as exc:
        raise CaseError(f"{path}: {exc}") from None
    warnings.extend(f"{path.name}: {note}" for note in notes)
    return labels, name


# --------------------------------------------------------------------------- reading a case


def read_case(source: str | Path | CaseSource, root: str | Path | None = None) -> Case:
    """Read and validate one case from a case folder or a :class:`CaseSource`.

    ``root``: every file must resolve under this folder (a source's own ``root`` otherwise).

    Returns:
        A :class:`Case`; missing secondary sequences are zero volumes with
        ``available`` False. ``labels`` is None when the case has no segmentation.

    Raises:
        CaseError: the message names the file and the problem (unreadable, empty,
            truncated, not 3-D, header larger than the limits or than the file, shapes or
            voxel sizes differ, NaN/Inf, missing or all-zero T1c, unknown label values, a
            broken link, a file outside ``root``).
    """
    if not isinstance(source, CaseSource):
        source = find_case_files(source, root)
    root = resolve_root(root) if root is not None else source.root
    where = source.origin or source.case_id
    if not source.paths:
        find_case_files(source.origin, root)  # raises the folder's own error
    ref_path = source.paths.get(REFERENCE_SEQUENCE)
    if ref_path is None:
        raise CaseError(f"{where}: T1c is missing; it is the reference sequence and is required")

    warnings: list[str] = []
    ref_image = _open_volume(Path(ref_path), "t1c", root)
    _check_grid_size(Path(ref_path), _open_shape(ref_image), _spacing(ref_image))
    ref_data = _read_data(Path(ref_path), "t1c", ref_image)
    shape, spacing, affine = ref_data.shape, _spacing(ref_image), ref_image.affine
    images = np.zeros((len(SEQUENCES), *shape), dtype=np.float32)
    available = np.zeros(len(SEQUENCES), dtype=bool)

    def check_grid(path: Path, data: np.ndarray, image: nib.Nifti1Image) -> None:
        if data.shape != shape:
            raise CaseError(f"{path.name} has shape {data.shape} but {ref_path.name} has {shape}")
        if not np.allclose(_spacing(image), spacing, atol=SPACING_TOLERANCE_MM):
            raise CaseError(f"{path.name} has voxel size {_spacing(image)} mm but {ref_path.name} has {spacing}")
        difference = float(np.abs(image.affine - affine).max())
        if difference > AFFINE_TOLERANCE_MM:
            warnings.append(
                f"{path.name}: affine differs from {ref_path.name} by up to {difference:g} mm; "
                "same shape and voxel size, so voxels are taken as aligned and T1c's affine is used"
            )

    for index, sequence in enumerate(SEQUENCES):
        path = source.paths.get(sequence)
        if path is None:
            continue
        data, image = (ref_data, ref_image) if sequence == REFERENCE_SEQUENCE else _load_volume(path, sequence, root)
        check_grid(path, data, image)
        volume = data.astype(np.float32)
        bad = int(np.count_nonzero(~np.isfinite(volume)))
        if bad:
            raise CaseError(f"{path}: {sequence} has {bad} NaN/Inf voxels")
        if not volume.any():
            if sequence == REFERENCE_SEQUENCE:
                raise CaseError(f"{path}: T1c is all zeros; it is the reference sequence and is required")
            warnings.append(f"{path.name}: all zeros, treated as a missing {sequence}")
            continue
        images[index] = volume
        available[index] = True

    labels, scheme = None, None
    if source.seg is not None:
        data, image = _load_volume(source.seg, "segmentation", root)
        check_grid(source.seg, data, image)
        labels, scheme = _canonical_labels(
            data, source.seg, source.label_scheme, images[SEQUENCES.index(REFERENCE_SEQUENCE)], warnings
        )

    original_grid, original_labels = None, None
    if not np.allclose(spacing, 1.0, atol=SPACING_TOLERANCE_MM):
        original_grid, original_labels = Grid(shape=tuple(shape), affine=affine.copy()), labels
        try:
            images = np.stack([_resample_to_1mm(v, spacing, order=1) for v in images]).astype(np.float32)
            if labels is not None:
                labels = _resample_to_1mm(labels, spacing, order=0).astype(np.uint8)
        except MemoryError:
            raise CaseError(f"{ref_path}: resampling {tuple(shape)} to 1 mm does not fit in memory") from None
        affine = affine @ np.diag([*(1.0 / np.asarray(spacing)), 1.0])
        warnings.append(
            f"{ref_path.name}: voxel size {'x'.join(f'{s:g}' for s in spacing)} mm resampled to 1 mm "
            f"(shape {tuple(shape)} -> {images.shape[1:]})"
        )
        spacing = (1.0, 1.0, 1.0)

    return Case(
        case_id=source.case_id,
        images=images,
        available=available,
        labels=labels,
        affine=np.asarray(affine, dtype=float),
        spacing=tuple(float(s) for s in spacing),
        label_scheme=scheme,
        warnings=warnings,
        header=ref_image.header.copy() if original_grid is None else None,
        original_grid=original_grid,
        original_labels=original_labels,
        meta=dict(source.meta),
    )


def read_label_map(path: str | Path, scheme: str | None = None) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """Read a label NIfTI on its own (a prediction or a reference) as canonical labels.

    Returns:
        (labels uint8, spacing in mm, affine).

    Raises:
        CaseError: unreadable file, not 3-D, or values outside the scheme.
    """
    path = Path(path)
    data, image = _load_volume(path, "label map")
    labels, _ = _canonical_labels(data, path, scheme, None, [])
    return labels, _spacing(image), image.affine


# --------------------------------------------------------------------------- writing


def label_image(labels: np.ndarray, like: Case | str | Path, scheme: str = "brats2020") -> nib.Nifti1Image:
    """A canonical label map as a NIfTI image on the grid and header of a reference image.

    Args:
        labels: (X, Y, Z) canonical uint8 labels on the reference's grid.
        like: a :class:`Case` (its T1c header and affine) or a NIfTI file to copy them from,
            so ITK-SNAP and 3D Slicer overlay the result on the images.
        scheme: values written: ``brats2020`` (1, 2, 4; what most tools expect),
            ``brats2023`` (1, 2, 3) or ``tc``.

    Raises:
        CaseError: shape differs from the reference grid, or the scheme is unknown.
    """
    if isinstance(like, Case):
        header, affine, shape = like.header, like.affine, like.shape
        if like.original_grid is not None:
            affine, shape = like.original_grid.affine, like.original_grid.shape
    else:
        image = nib.load(str(like))
        header, affine, shape = image.header, image.affine, image.shape[:3]
    if tuple(labels.shape) != tuple(shape):
        raise CaseError(f"labels have shape {labels.shape} but the reference grid is {tuple(shape)}")
    if scheme not in LABEL_SCHEMES:
        raise CaseError(f"unknown label scheme {scheme!r}; expected one of {sorted(LABEL_SCHEMES)}")
    lut = np.zeros(256, dtype=np.uint8)
    for value, canonical in LABEL_SCHEMES[scheme].items():
        lut[canonical] = value
    if scheme == "tc":
        lut[ENHANCING] = 1
    out = lut[np.asarray(labels, dtype=np.uint8)]
    header = header.copy() if header is not None else nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    image = nib.Nifti1Image(out, affine, header)
    image.set_qform(affine, code=int(header["qform_code"]) or 1)
    image.set_sform(affine, code=int(header["sform_code"]) or 1)
    return image


def write_labels(labels: np.ndarray, path: str | Path, like: Case | str | Path, scheme: str = "brats2020") -> Path:
    """Write :func:`label_image` to ``path`` (.nii.gz or .nii)."""
    image = label_image(labels, like, scheme)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def label_nifti_bytes(labels: np.ndarray, like: Case | str | Path, scheme: str = "brats2020") -> bytes:
    """:func:`label_image` as the bytes of a .nii.gz file (for downloads)."""
    import gzip

    return gzip.compress(label_image(labels, like, scheme).to_bytes(), compresslevel=6)


def write_volume(volume: np.ndarray, path: str | Path, affine: np.ndarray, dtype=np.int16) -> Path:
    """Write a 3-D image volume (rounded for integer dtypes) with qform and sform set."""
    data = np.asarray(volume)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    image = nib.Nifti1Image(data.astype(dtype), affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path
