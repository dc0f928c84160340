"""SQLite results store: one row per (model, case, missing set, region, empty policy, code version).

WAL journal; the schema is versioned with ``PRAGMA user_version`` and migrated forward on
open, in one ``BEGIN IMMEDIATE`` transaction that reads the version under the write lock, so
processes opening a new store at once each see it either before or after the migration,
never half-way. All regions of one (model, case, missing set) are written in one transaction, so a
sweep killed at any moment leaves either all of them or none, and rerunning skips what is
done; a result already there is never written again (two sweeps on one store write each
result once). Predicted label maps are cached compressed so the app can show them at once.
Metrics are scored on each case's own grid, as in its files (``core.io.scoring_reference``).
Database errors are raised as :class:`StoreError`, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import sqlite3
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import core
from core.io import CaseSource
from core.metrics import RegionMetrics
from core.postprocess import CLEANED
from core.sequences import SEQUENCES, combination_name

MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE models (
            sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, card TEXT NOT NULL
        );
        CREATE TABLE cases (
            case_key TEXT PRIMARY KEY, patient_id TEXT NOT NULL, content_hash TEXT NOT NULL,
            hospital TEXT, split TEXT, acquired_missing TEXT NOT NULL, meta TEXT
        );
        CREATE TABLE results (
            model_sha256 TEXT NOT NULL REFERENCES models(sha256),
            case_key TEXT NOT NULL REFERENCES cases(case_key),
            missing TEXT NOT NULL, region TEXT NOT NULL, empty_policy TEXT NOT NULL, code_version TEXT NOT NULL,
            dice REAL, sensitivity REAL, hd95 REAL, volume_pred_ml REAL, volume_ref_ml REAL,
            PRIMARY KEY (model_sha256, case_key, missing, region, empty_policy, code_version)
        );
    """,
    # Version 2: timing and device per result, and the prediction cache.
    2: """
        ALTER TABLE results ADD COLUMN seconds REAL;
        ALTER TABLE results ADD COLUMN device TEXT;
        ALTER TABLE results ADD COLUMN created REAL;
        CREATE TABLE predictions (
            model_sha256 TEXT NOT NULL, case_key TEXT NOT NULL, missing TEXT NOT NULL, code_version TEXT NOT NULL,
            shape TEXT NOT NULL, labels BLOB NOT NULL,
            PRIMARY KEY (model_sha256, case_key, missing, code_version)
        );
    """,
    # Version 3: content hashes of case files remembered by (path, size, mtime), so planning a
    # sweep does not read every image again.
    3: """
        CREATE TABLE file_hashes (signature TEXT PRIMARY KEY, digest TEXT NOT NULL);
    """,
    # Version 4: the runtime that computed each result (rows before it are the native engine's:
    # "torch", the column default, so old rows are not rewritten), and not-applicable rows: a
    # combination of missing sequences a model's card says it cannot run on, kept without metrics
    # (applicable 0) so that it is counted as not applicable, never read as Dice 0.
    4: """
        ALTER TABLE results ADD COLUMN runtime TEXT NOT NULL DEFAULT 'torch';
        ALTER TABLE results ADD COLUMN applicable INTEGER NOT NULL DEFAULT 1;
    """,
    # Version 5: a single thread is "CPU (1 thread)"; earlier sweeps wrote "CPU (1 threads)".
    5: """
        UPDATE results SET device = replace(device, '(1 threads)', '(1 thread)') WHERE device LIKE '%(1 threads)%';
    """,
}
SCHEMA_VERSION = max(MIGRATIONS)
SCORED_ON = "each case's own grid, as in its files (the reference is never resampled)"
CODE_VERSION = core.__version__
EXPORT_COLUMNS = ["model", "patient_id", "hospital", "split", "acquired_missing", "missing", "region", "dice",
                  "sensitivity", "hd95", "volume_pred_ml", "volume_ref_ml", "volume_diff_ml", "seconds", "device",
                  "empty_policy", "code_version", "model_sha256", "case_key", "runtime", "applicable"]  # fmt: skip
NATIVE_RUNTIME = "torch"  # the runtime of DeepMedic's own engine (core.infer)


def encode_labels(labels: np.ndarray) -> tuple[str, bytes]:
    """A label map as (header JSON, blob): its non-zero bounding box, LZMA-compressed.

    About 10 kB for a glioblastoma on a 1 mm brain grid (zlib on the whole grid: 26 kB).
    """
    labels = np.asarray(labels, np.uint8)
    box = []
    for axis in range(labels.ndim):
        present = np.flatnonzero(labels.any(axis=tuple(a for a in range(labels.ndim) if a != axis)))
        box.append([int(present[0]), int(present[-1]) + 1] if present.size else [0, 0])
    crop = np.ascontiguousarray(labels[tuple(slice(a, b) for a, b in box)])
    header = {"shape": list(labels.shape), "box": box, "codec": "lzma"}
    return json.dumps(header), lzma.compress(crop.tobytes(), preset=6)


def decode_labels(header: str, blob: bytes) -> np.ndarray:
    """The label map of :func:`encode_labels` (or of a version 2 row: whole grid, zlib)."""
    meta = json.loads(header)
    if isinstance(meta, list):  # stores written before the cropped encoding
        return np.frombuffer(zlib.decompress(blob), np.uint8).reshape(meta)
    labels = np.zeros(meta["shape"], np.uint8)
    box = tuple(slice(a, b) for a, b in meta["box"])
    labels[box] = np.frombuffer(lzma.decompress(blob), np.uint8).reshape([b - a for a, b in meta["box"]])
    return labels


def case_key(patient_id: str, digest: str) -> str:
    """Store key of a case: the patient id and its content hash (a changed file is a new case)."""
    return f"{patient_id}@{digest}"


def files_hash(source: CaseSource, store: ResultStore | None = None) -> str:
    """Content hash of a case's files (the bytes on disk, no decoding).

    With a store, the digest is remembered under the files' paths, sizes and modification
    times, so a file is read again only when it changed.
    """
    paths = [source.paths.get(s) for s in SEQUENCES] + [source.seg]
    present = [Path(p) if p is not None and Path(p).is_file() else None for p in paths]
    signature = json.dumps([[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] if p else None for p in present])
    if store is not None:
        remembered = store.remembered_digest(signature)
        if remembered is not None:
            return remembered
    digest = hashlib.blake2b(digest_size=8)
    for path in present:
        digest.update(b"|")
        if path is not None:
            digest.update(path.read_bytes())
    value = digest.hexdigest()
    if store is not None:
        store.remember_digest(signature, value)
    return value


def source_key(source: CaseSource, store: ResultStore | None = None) -> str:
    """Store key of the case at ``source``: :func:`case_key` of its id and :func:`files_hash`."""
    return case_key(source.case_id, files_hash(source, store))


class StoreError(RuntimeError):
    """A results store cannot be opened, migrated or written; the message names the file."""


def _statements(script: str) -> list[str]:
    """The SQL statements of a migration, to run one by one inside a transaction
    (``executescript`` would commit the transaction first)."""
    return [part.strip() for part in script.split(";") if part.strip()]


@dataclass(frozen=True)
class StoredPrediction:
    """A label map cached by a sweep, with how long it took and where."""

    labels: np.ndarray  # (X, Y, Z) uint8 canonical labels
    seconds: float
    device: str


@dataclass(frozen=True)
class ResultKey:
    """What identifies one unit of sweep work (all regions of it)."""

    model_sha256: str
    case_key: str
    missing: str
    empty_policy: str = "nan"
    code_version: str = CODE_VERSION


class ResultStore:
    """A results database at ``path`` (created and migrated on open)."""

    def __init__(self, path: str | Path, timeout_s: float = 60.0):
        """Open (creating and migrating) the store.

        Raises:
            StoreError: the file is not a results store, cannot be opened, or has a newer schema.
        """
        self.path = Path(path)
        self.db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
            self._set_wal(timeout_s)
            self.db.execute("PRAGMA foreign_keys=ON")
            self.migrate()
        except (sqlite3.Error, OSError) as exc:
            if self.db is not None:
                self.db.close()
            raise StoreError(f"{self.path}: cannot open the results store ({type(exc).__name__}: {exc})") from exc
        except StoreError:
            self.db.close()
            raise

    def _set_wal(self, timeout_s: float) -> None:
        """WAL journal; switching needs a moment alone with a new file, so a busy answer is retried."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, target: int = SCHEMA_VERSION) -> None:
        """Apply the migrations after the current version, atomically and at most once.

        The version is read inside a ``BEGIN IMMEDIATE`` transaction (the write lock), so
        of several processes opening one new store at once, one migrates and the others
        find it done. A store already at ``target`` is only read.

        Raises:
            StoreError: the store's schema is newer than this code.
        """
        if self.version >= target:  # the common case: no lock taken, nothing written
            self._check_not_newer()
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self._check_not_newer()
            for version in range(self.version + 1, target + 1):
                for statement in _statements(MIGRATIONS[version]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {version}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _check_not_newer(self) -> None:
        if self.version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {self.version} is newer than this code ({SCHEMA_VERSION})")

    # ----------------------------------------------------------------------- writing

    def add_model(self, sha256: str, name: str, card: dict) -> None:
        self.db.execute("INSERT OR IGNORE INTO models VALUES (?, ?, ?)", (sha256, name, json.dumps(card)))

    def add_case(self, key: str, patient_id: str, digest: str, hospital: str, split: str,
                 acquired_missing: frozenset[str], meta: dict | None = None) -> None:  # fmt: skip
        """Record a case once (a case already there is left as it is); ``hospital`` "" = not given."""
        self.db.execute(
            "INSERT OR IGNORE INTO cases VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, patient_id, digest, hospital, split, combination_name(acquired_missing), json.dumps(meta or {})),
        )

    def add_source(self, source: CaseSource, hospital: str, split: str, acquired_missing: frozenset[str],
                   meta: dict | None = None) -> str:  # fmt: skip
        """Record the case at ``source`` (its files hashed, or their remembered digest) and return its key."""
        digest = files_hash(source, self)
        key = case_key(source.case_id, digest)
        self.add_case(key, source.case_id, digest, hospital, split, acquired_missing, meta)
        return key

    def write(self, key: ResultKey, metrics: dict[str, RegionMetrics], seconds: float, device: str,
              labels: np.ndarray | tuple[str, bytes] | None = None, runtime: str = NATIVE_RUNTIME) -> bool:  # fmt: skip
        """All regions of one result (and its label map, or its :func:`encode_labels`) in one
        transaction, unless another writer (a second sweep, the app) wrote it first.

        Returns:
            True when written, False when the store already held this result (left as it is).
        """
        encoded = encode_labels(labels) if isinstance(labels, np.ndarray) else labels
        now = time.time()
        rows = [
            (key.model_sha256, key.case_key, key.missing, region, key.empty_policy, key.code_version, m.dice,
             m.sensitivity, m.hd95, m.volume_pred_ml, m.volume_ref_ml, seconds, device, now, runtime, 1)
            for region, m in metrics.items()
        ]  # fmt: skip
        return self._insert(key, rows, encoded)

    def write_not_applicable(self, key: ResultKey, regions: Iterable[str], runtime: str = "") -> bool:
        """Record that the model cannot run on this combination (its card says ``cannot-run``):
        one row per region without metrics, ``applicable`` 0, so statistics and figures skip it
        and say so, and a sweep does not try it again. Returns True when written."""
        now = time.time()
        rows = [(key.model_sha256, key.case_key, key.missing, region, key.empty_policy, key.code_version, None, None,
                 None, None, None, None, "", now, runtime, 0) for region in regions]  # fmt: skip
        return self._insert(key, rows, None)

    def _insert(self, key: ResultKey, rows: list[tuple], encoded: tuple[str, bytes] | None) -> bool:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            there = self.db.execute(
                "SELECT 1 FROM results WHERE model_sha256=? AND case_key=? AND missing=? AND empty_policy=? "
                "AND code_version=? LIMIT 1",
                (key.model_sha256, key.case_key, key.missing, key.empty_policy, key.code_version),
            ).fetchone()
            if there:
                self.db.execute("ROLLBACK")
                return False
            self.db.executemany(
                "INSERT OR REPLACE INTO results (model_sha256, case_key, missing, region, empty_policy, code_version, "
                "dice, sensitivity, hd95, volume_pred_ml, volume_ref_ml, seconds, device, created, runtime, "
                "applicable) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if encoded is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?)",
                    (key.model_sha256, key.case_key, key.missing, key.code_version, *encoded),
                )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return True

    def trim_predictions(self, keep_per_hospital: int) -> int:
        """Keep the cached label maps of the first ``keep_per_hospital`` patients (by id) of
        each hospital, drop the others (their metrics stay) and compact the file.

        Returns:
            The number of label maps dropped.
        """
        count = self.db.execute(
            "DELETE FROM predictions WHERE case_key NOT IN (SELECT case_key FROM (SELECT case_key, "
            "ROW_NUMBER() OVER (PARTITION BY hospital ORDER BY patient_id) AS rank FROM cases) WHERE rank <= ?)",
            (keep_per_hospital,),
        ).rowcount
        self.compact()
        return count

    def keep_models(self, sha256s: Iterable[str]) -> dict[str, int]:
        """Drop every model not in ``sha256s`` (retrained or removed weights) with its results
        and label maps, so a name never stands for two sets of weights; a kept model's results
        after Clean up (``core.postprocess.cleaned_model``) stay with it. Returns what was dropped."""
        keep = sorted({sha + extra for sha in sha256s for extra in ("", CLEANED)})
        marks = ",".join("?" * len(keep))
        dropped = {}
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for table, column in (("predictions", "model_sha256"), ("results", "model_sha256"), ("models", "sha256")):
                dropped[table] = self.db.execute(f"DELETE FROM {table} WHERE {column} NOT IN ({marks})", keep).rowcount
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return dropped

    def forget_file_hashes(self) -> int:
        """Forget the remembered content hashes of case files (they name paths of this machine: a
        store to share needs none; a sweep hashes the files again). Returns how many were forgotten."""
        return self.db.execute("DELETE FROM file_hashes").rowcount

    def compact(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.execute("VACUUM")

    def remembered_digest(self, signature: str) -> str | None:
        row = self.db.execute("SELECT digest FROM file_hashes WHERE signature = ?", (signature,)).fetchone()
        return row[0] if row else None

    def remember_digest(self, signature: str, digest: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?)", (signature, digest))

    # ----------------------------------------------------------------------- reading

    def done(self, keys: Iterable[ResultKey]) -> set[ResultKey]:
        """The keys that already have results."""
        present = {
            tuple(row)
            for row in self.db.execute(
                "SELECT DISTINCT model_sha256, case_key, missing, empty_policy, code_version FROM results"
            )
        }
        return {k for k in keys if (k.model_sha256, k.case_key, k.missing, k.empty_policy, k.code_version) in present}

    def prediction(self, model_sha256: str, key: str, missing: str, code_version: str = CODE_VERSION):
        """A cached predicted label map, or None."""
        row = self.db.execute(
            "SELECT shape, labels FROM predictions "
            "WHERE model_sha256=? AND case_key=? AND missing=? AND code_version=?",
            (model_sha256, key, missing, code_version),
        ).fetchone()
        return None if row is None else decode_labels(*row)

    def encoded_prediction(
        self, model_sha256: str, key: str, missing: str, code_version: str = CODE_VERSION
    ) -> tuple[tuple[str, bytes], float, str] | None:
        """A cached label map as stored (:func:`encode_labels`' header and blob), with the seconds and
        device of its result (0 and "" without one), or None: what a sweep hands a worker to clean
        without predicting again."""
        row = self.db.execute(
            "SELECT p.shape, p.labels, r.seconds, r.device FROM predictions p LEFT JOIN results r USING "
            "(model_sha256, case_key, missing, code_version) WHERE p.model_sha256=? AND p.case_key=? AND p.missing=? "
            "AND p.code_version=? LIMIT 1",
            (model_sha256, key, missing, code_version),
        ).fetchone()
        return None if row is None else ((row[0], row[1]), float(row[2] or 0.0), row[3] or "")

    def has_prediction(self, model_sha256: str, key: str, missing: frozenset[str],
                       code_version: str = CODE_VERSION) -> bool:  # fmt: skip
        """Whether a label map is cached (an index lookup; nothing is decoded)."""
        row = self.db.execute(
            "SELECT 1 FROM predictions WHERE model_sha256=? AND case_key=? AND missing=? AND code_version=? LIMIT 1",
            (model_sha256, key, combination_name(missing), code_version),
        ).fetchone()
        return row is not None

    def stored_prediction(self, model_sha256: str, key: str, missing: frozenset[str],
                          code_version: str = CODE_VERSION) -> StoredPrediction | None:  # fmt: skip
        """A cached label map with the seconds and device of its result, or None."""
        found = self.encoded_prediction(model_sha256, key, combination_name(missing), code_version)
        return None if found is None else StoredPrediction(decode_labels(*found[0]), *found[1:])

    def case_records(self) -> list[dict]:
        """Every case: patient_id, hospital ("" = not given), split, acquired_missing (a name) and
        meta (a dict; ``synthetic`` holds preset, scale, seed and case_index of a generated case)."""
        rows = self.db.execute("SELECT patient_id, hospital, split, acquired_missing, meta FROM cases").fetchall()
        return [{"patient_id": patient, "hospital": hospital, "split": split, "acquired_missing": missing,
                 "meta": json.loads(meta or "{}")} for patient, hospital, split, missing, meta in rows]  # fmt: skip

    def first_patient_with_predictions(self, count: int) -> str | None:
        """The first patient (by id) with cached label maps of one model for at least ``count``
        combinations of missing sequences, or None."""
        row = self.db.execute(
            "SELECT c.patient_id FROM predictions p JOIN cases c USING (case_key) "
            "GROUP BY p.model_sha256, c.patient_id HAVING COUNT(DISTINCT p.missing) >= ? ORDER BY c.patient_id LIMIT 1",
            (count,),
        ).fetchone()
        return row[0] if row else None

    def table(self):
        """The long results table (EXPORT_COLUMNS) as a DataFrame; rows with ``applicable`` 0 are
        combinations the model cannot run on (no metrics: skip them, ``core.stats.applicable_rows``)."""
        import pandas as pd

        query = """
            SELECT m.name AS model, c.patient_id, c.hospital, c.split, c.acquired_missing, r.missing, r.region,
                   r.dice, r.sensitivity, r.hd95, r.volume_pred_ml, r.volume_ref_ml,
                   r.volume_pred_ml - r.volume_ref_ml AS volume_diff_ml, r.seconds, r.device, r.empty_policy,
                   r.code_version, r.model_sha256, r.case_key, r.runtime, r.applicable
            FROM results r JOIN models m ON m.sha256 = r.model_sha256 JOIN cases c ON c.case_key = r.case_key
            ORDER BY m.name, c.hospital, c.patient_id, r.missing, r.region
        """
        return pd.read_sql_query(query, self.db)

    def timing_by_device(self) -> dict[str, tuple[int, float, float, float]]:
        """Per device: (predictions, mean seconds each, first and last ``created`` time in s since the epoch);
        the results after Clean up, the same predictions scored again, left out."""
        rows = self.db.execute(
            "SELECT device, COUNT(*), AVG(seconds), MIN(created), MAX(created) FROM (SELECT DISTINCT model_sha256, "
            "case_key, missing, device, seconds, created FROM results WHERE applicable = 1 AND model_sha256 NOT LIKE "
            f"'%{CLEANED}') GROUP BY device"
        ).fetchall()
        return {device: (count, seconds, first, last) for device, count, seconds, first, last in rows}

    def timing_by_runtime(self) -> dict[tuple[str, str], tuple[int, float, float]]:
        """Per (model name, runtime): (predictions, mean and median seconds each), not-applicable rows and
        the results after Clean up (the same predictions scored again) left out."""
        rows = self.db.execute(
            "SELECT m.name, r.runtime, r.seconds FROM (SELECT DISTINCT model_sha256, case_key, missing, runtime, "
            "seconds FROM results WHERE applicable = 1 AND seconds IS NOT NULL AND model_sha256 NOT LIKE "
            f"'%{CLEANED}') r JOIN models m ON m.sha256 = r.model_sha256"
        ).fetchall()
        groups: dict[tuple[str, str], list[float]] = {}
        for name, runtime, seconds in rows:
            groups.setdefault((name, runtime), []).append(float(seconds))
        return {key: (len(v), float(np.mean(v)), float(np.median(v))) for key, v in sorted(groups.items())}

    def counts(self) -> dict[str, int]:
        return {t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("models", "cases", "results", "predictions", "file_hashes")}  # fmt: skip


# --------------------------------------------------------------------------- sources
# The app reads two stores: the bundled demo results (read only) and the user's own. They are
# kept apart as sources: a user's row never replaces a demo row, even for the same case.
RESULT_SOURCES = {"demo": "demo results", "user": "your data", "both": "both"}
# The group of cases whose store row names no hospital (a case folder evaluated without a manifest).
NO_HOSPITAL = "not given"


def combine_sources(tables: dict, source: str = "both"):
    """The results of one source or of both, each row tagged with its ``source``.

    Args:
        tables: {"demo": DataFrame, "user": DataFrame} of :meth:`ResultStore.table` (either may be empty).
        source: "demo", "user" or "both". With "both", a user row of a result the demo store
            already holds (same weights, case content, combination, region and policy) is left
            out, so a case is counted once, unless the user's store also holds that result after
            Clean up (``NAME+clean``): then the user's raw row stays and the demo's goes, so that
            the two score one prediction. A user case that shares a demo patient's id but not
            its content is renamed ``<id> (your data)`` so tests never pair the two.

    Returns:
        The long results table plus a ``source`` column; a blank hospital reads NO_HOSPITAL.

    Raises:
        ValueError: an unknown source.
    """
    import pandas as pd

    if source not in RESULT_SOURCES:
        raise ValueError(f"source must be one of {sorted(RESULT_SOURCES)}, got {source!r}")
    key = ["model_sha256", "case_key", "missing", "region", "empty_policy"]
    parts = {}
    for name in ("demo", "user"):
        table = tables.get(name)
        if table is None or table.empty or source not in (name, "both"):
            continue
        table = table.drop_duplicates(key, keep="last").assign(source=RESULT_SOURCES[name])
        blank = table["hospital"].isna() | (table["hospital"].astype(str).str.strip() == "")
        parts[name] = table.assign(hospital=table["hospital"].where(~blank, NO_HOSPITAL))
    if "demo" in parts and "user" in parts:
        demo, user = parts["demo"], parts["user"]
        cleaned = user[user["model_sha256"].str.endswith(CLEANED)]
        partners = cleaned[key].assign(model_sha256=cleaned["model_sha256"].str.removesuffix(CLEANED))
        paired = user[pd.MultiIndex.from_frame(user[key]).isin(pd.MultiIndex.from_frame(partners))]
        demo = parts["demo"] = demo[~pd.MultiIndex.from_frame(demo[key]).isin(pd.MultiIndex.from_frame(paired[key]))]
        user = user[~pd.MultiIndex.from_frame(user[key]).isin(pd.MultiIndex.from_frame(demo[key]))]
        clash = user["patient_id"].isin(set(demo["patient_id"])) & ~user["case_key"].isin(set(demo["case_key"]))
        parts["user"] = user.assign(patient_id=user["patient_id"].where(~clash, user["patient_id"] + " (your data)"))
    if not parts:
        return pd.DataFrame(columns=[*EXPORT_COLUMNS, "source"])
    return pd.concat(list(parts.values()), ignore_index=True)
