"""Which cases a path holds: manifests, case folders and folders of case folders.

A manifest (``manifest.csv``) lists one case per row: patient_id, the four sequence files
(paths relative to it; empty = missing) and optional seg, hospital, split, missing and
label_scheme columns, kept in ``CaseSource.meta``. :mod:`core.io` reads each case.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from core.io import FILE_PATTERN, Case, CaseError, CaseSource, confine, find_case_files, read_case, resolve_root
from core.sequences import SEQUENCES

# The manifest: one case per row. Required columns, then the columns a written manifest
# starts with (DESIGN.md section 4); any other column is kept in ``CaseSource.meta``.
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("patient_id", "t1", "t1c", "t2", "flair")
MANIFEST_HEAD = ("patient_id", "hospital", "split", "t1", "t1c", "t2", "flair", "seg", "missing", "label_scheme")
# The hospital of a case whose manifest names none (or that has no manifest): the public set.
DEFAULT_HOSPITAL = "public"


def given_hospital(meta: dict) -> str:
    """The hospital a case's manifest row names, or "" when it names none (no column, no manifest)."""
    return str(meta.get("hospital", ""))


def hospital_of(meta: dict) -> str:
    """The hospital a case counts as when cases are chosen by hospital: the one its manifest row
    names (an empty cell stays empty), DEFAULT_HOSPITAL without a hospital column or manifest."""
    return str(meta.get("hospital", DEFAULT_HOSPITAL))


def read_manifest_rows(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and rows (text, as written) of a manifest CSV.

    Raises:
        CaseError: the file cannot be read or lacks a required column (MANIFEST_COLUMNS).
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = [{k: v for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CaseError(f"{path}: cannot read manifest ({exc})") from exc
    absent = [c for c in MANIFEST_COLUMNS if c not in columns]
    if absent:
        raise CaseError(f"{path}: manifest lacks column(s) {absent}; it has {columns}")
    return columns, rows


def write_manifest(rows: list[dict], path: str | Path, leave_out: tuple[str, ...] = ()) -> None:
    """Write manifest rows as CSV, MANIFEST_HEAD first, then every other key in the order met
    (except ``leave_out``); the file is replaced whole, never left half written."""
    path = Path(path)
    columns = list(MANIFEST_HEAD)
    for row in rows:
        columns += [k for k in row if k not in columns and k not in leave_out]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def manifest_summary(folder: str | Path) -> list[dict[str, str]]:
    """Per case of a cohort folder: patient_id, hospital (:func:`hospital_of`), split ("" when
    not given) and missing (the manifest's column, else the combination of secondary sequences
    with an empty path). Without a manifest, the case folders the folder holds (as
    :func:`find_cases` finds them: BraTS folders of real scans, say); [] when it holds none.

    Raises:
        CaseError: the manifest cannot be read or lacks a required column.
    """
    from core.sequences import SECONDARY, combination_name

    manifest = Path(folder) / MANIFEST_NAME
    if not manifest.is_file():
        try:
            sources = find_cases(folder)
        except CaseError:
            return []
        return [
            {
                "patient_id": s.case_id,
                "hospital": hospital_of(s.meta),
                "split": s.meta.get("split", ""),
                "missing": combination_name({q for q in SECONDARY if s.paths.get(q) is None}),
            }
            for s in sources
            if any(s.paths.values())
        ]  # fmt: skip  (a folder of no case's files: not listed)
    columns, rows = read_manifest_rows(manifest)
    out = []
    for row in rows:
        missing = row["missing"] if "missing" in columns else combination_name(
            {s for s in SECONDARY if not (row.get(s) or "").strip()})  # fmt: skip
        out.append({"patient_id": row["patient_id"], "hospital": hospital_of(row), "split": row.get("split", ""),
                    "missing": missing})  # fmt: skip
    return out


def read_manifest(path: str | Path, root: str | Path | None = None) -> list[CaseSource]:
    """Read a manifest CSV: one case per row, paths relative to the manifest, empty = missing.

    Required columns: patient_id, t1, t1c, t2, flair; optional: seg, label_scheme and any
    others (kept in ``CaseSource.meta``). With ``root``, the manifest must resolve under it,
    and so must each file it names when the case is read (``../`` or absolute paths, links).

    Raises:
        CaseError: the file cannot be read or leaves ``root``, lacks required columns or
            repeats a patient_id.
    """
    path, root = Path(path), resolve_root(root)
    confine(path, root, "manifest")
    _, rows = read_manifest_rows(path)
    base = path.parent
    sources, seen = [], {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        case_id = (row.get("patient_id") or "").strip()
        origin = f"{path.name} line {number}"
        if not case_id:
            raise CaseError(f"{path}: line {number} has an empty patient_id")
        if case_id in seen:
            raise CaseError(f"{path}: patient_id {case_id!r} on lines {seen[case_id]} and {number}")
        seen[case_id] = number

        def resolve(value: str | None) -> Path | None:
            value = (value or "").strip()
            return (base / value) if value else None

        sources.append(
            CaseSource(
                case_id=case_id,
                paths={s: resolve(row.get(s)) for s in SEQUENCES},
                seg=resolve(row.get("seg")),
                label_scheme=(row.get("label_scheme") or "").strip() or None,
                meta=row,
                origin=origin,
                root=root,
            )
        )
    return sources


def find_cases(path: str | Path, root: str | Path | None = None) -> list[CaseSource]:
    """The cases at a path: a manifest CSV, a case folder, or a folder of case folders.

    ``root``: confine every file to this folder, links resolved (see :func:`confine`).

    Raises:
        CaseError: nothing at the path looks like a case, or the path leaves ``root``.
    """
    path, root = Path(path), resolve_root(root)
    confine(path, root, "path")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return read_manifest(path, root)
        raise CaseError(f"{path}: expected a manifest .csv, a case folder or a cohort folder")
    if not path.is_dir():
        raise CaseError(f"{path}: no such file or folder")
    if (path / MANIFEST_NAME).is_file():
        return read_manifest(path / MANIFEST_NAME, root)
    if any(FILE_PATTERN.match(p.name) for p in path.iterdir() if p.is_file() or p.is_symlink()):
        return [find_case_files(path, root)]
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    sources = []
    for folder in folders:
        try:
            sources.append(find_case_files(folder, root))
        except CaseError:
            # Kept so the report lists it; read_case raises the same error again.
            sources.append(CaseSource(case_id=folder.name, paths={}, origin=str(folder), root=root))
    if not sources:
        raise CaseError(f"{path}: holds no case folders, NIfTI files or manifest.csv")
    return sources


def iter_cohort(
    path: str | Path, on_progress: Callable[[int, int, str], None] | None = None, root: str | Path | None = None
) -> Iterator[tuple[CaseSource, Case | CaseError]]:
    """Read every case at a path, yielding each case or the error that rejected it.

    A bad case never stops the iteration. ``root`` confines every file (:func:`find_cases`).

    Raises:
        CaseError: only when the path itself holds no cases, leaves ``root`` or its manifest
            is unreadable.
    """
    sources = find_cases(path, root)
    for done, source in enumerate(sources):
        try:
            result: Case | CaseError = read_case(source)
        except CaseError as exc:
            result = exc
        if on_progress:
            on_progress(done + 1, len(sources), source.case_id)
        yield source, result


def inspect_path(path: str | Path, on_progress: Callable[[int, int, str], None] | None = None,
                 root: str | Path | None = None) -> dict:  # fmt: skip
    """Validation report for a case folder, cohort folder or manifest (JSON-ready); with
    ``root``, a file outside it (links resolved) rejects its case."""
    try:
        entries = []
        for source, result in iter_cohort(path, on_progress, root):
            entry: dict = {"case_id": source.case_id, "origin": source.origin}
            if isinstance(result, CaseError):
                entry.update(ok=False, reasons=[str(result)])
            else:
                entry.update(
                    ok=True,
                    shape=list(result.shape),
                    spacing_mm=list(result.spacing),
                    missing=sorted(result.missing, key=SEQUENCES.index),
                    label_scheme=result.label_scheme,
                    labels_present=sorted(int(v) for v in np.unique(result.labels))
                    if result.labels is not None
                    else None,
                    warnings=result.warnings,
                )
            entries.append(entry)
    except CaseError as exc:
        return {"path": str(path), "ok": False, "error": str(exc), "cases": []}
    accepted = sum(e["ok"] for e in entries)
    return {
        "path": str(path),
        "ok": accepted == len(entries),
        "n_cases": len(entries),
        "n_accepted": accepted,
        "n_rejected": len(entries) - accepted,
        "cases": entries,
    }
