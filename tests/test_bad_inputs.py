"""Bad inputs, one row each, through read_case, the command line and the Your data functions.

Each row builds one bad input under a data root (or a model folder, or a store) and names the
fragment every channel's message must hold; a row whose CLI fragment is None is one the CLI
accepts (it follows links, and says so in its help). Every channel must give a clear error
or the correct result, never a traceback, and leave what was already written in place.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from core.__main__ import main
from core.cases import find_cases
from core.io import CaseError, read_case
from core.model import ModelError, build_model, load_model, save_model
from core.preprocess import fit_landmarks
from core.store import ResultStore, StoreError
from core.sweep import SweepConfig, run_sweep
from tests.conftest import NAMES, SHAPE, phantom, save

ROOT = Path(__file__).resolve().parents[1]
SEQUENCE_FILES = dict(zip(("t1", "t1c", "t2", "flair", "seg"), NAMES["brats2020"]))


# --------------------------------------------------------------------------- builders


def good_case(folder: Path, spacing=(1.0, 1.0, 1.0), skip=()) -> Path:
    """A readable phantom case (BraTS 2020 names) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = phantom()
    affine = np.diag([*spacing, 1.0])
    for index, sequence in enumerate(("t1", "t1c", "t2", "flair")):
        if sequence not in skip:
            save(images[index].astype(np.int16), file_of(folder, sequence), affine)
    save(np.array([0, 1, 2, 4], np.uint8)[labels], file_of(folder, "seg"), affine)
    return folder


def file_of(folder: Path, sequence: str) -> Path:
    return folder / f"{folder.name}_{SEQUENCE_FILES[sequence]}.nii.gz"


def lying_header(path: Path, shape, dtype=np.float32, payload: int = 2048, zooms=None) -> Path:
    """A .nii.gz whose header declares ``shape`` but which holds only ``payload`` bytes of voxels."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    if zooms:
        header.set_zooms(zooms)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * payload))
    return path


def replace_sequence(sequence: str, write):
    """A builder: a good case whose ``sequence`` file is replaced by ``write(path)``."""

    def build(folder: Path, outside: Path) -> Path:
        good_case(folder)
        path = file_of(folder, sequence)
        path.unlink()
        write(path)
        return folder

    return build


def volume(data, affine=None):
    return lambda path: save(np.asarray(data), path, affine)


def symlink_outside(folder: Path, outside: Path) -> Path:
    good_case(folder)
    target = good_case(outside / "elsewhere")
    file_of(folder, "flair").unlink()
    file_of(folder, "flair").symlink_to(file_of(target, "flair"))
    return folder


def manifest_to(paths: str):
    def build(folder: Path, outside: Path) -> Path:
        good_case(folder / "P1")
        target = good_case(outside / "P9")
        row = {s: f"P1/{file_of(folder / 'P1', s).name}" for s in SEQUENCE_FILES}
        row["t2"] = paths.format(outside=outside, t2=file_of(target, "t2"), rel=os.path.relpath(target, folder))
        header = "patient_id,hospital,split,t1,t1c,t2,flair,seg"
        line = f"P1,1,test,{row['t1']},{row['t1c']},{row['t2']},{row['flair']},{row['seg']}"
        (folder / "manifest.csv").write_text(f"{header}\n{line}\n")
        return folder / "manifest.csv"

    return build


def dangling(folder: Path, outside: Path) -> Path:
    good_case(folder)
    file_of(folder, "t2").unlink()
    file_of(folder, "t2").symlink_to(folder / "gone.nii.gz")
    return folder


def folder_named_like_a_sequence(folder: Path, outside: Path) -> Path:
    good_case(folder)
    file_of(folder, "t2").unlink()
    file_of(folder, "t2").mkdir()
    return folder


def unreadable(folder: Path, outside: Path) -> Path:
    good_case(folder)
    file_of(folder, "t2").chmod(0)
    return folder


def coarse_voxels(folder: Path, outside: Path) -> Path:
    good_case(folder, skip=("t1", "t2", "flair"))
    for sequence in ("t1c", "seg"):
        path = file_of(folder, sequence)
        image = nib.load(str(path))
        image.header.set_zooms((20.0, 20.0, 20.0))
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), np.diag([20.0, 20.0, 20.0, 1]), image.header), path)
    return folder


def non_1mm(folder: Path, outside: Path) -> Path:
    return good_case(folder, spacing=(1.0, 1.0, 3.0))


def all_zero_t1c(folder: Path, outside: Path) -> Path:
    good_case(folder)
    save(np.zeros(SHAPE, np.int16), file_of(folder, "t1c"))
    return folder


def no_t1c(folder: Path, outside: Path) -> Path:
    return good_case(folder, skip=("t1c",))


def labels_with(values):
    def write(path: Path) -> None:
        _, labels = phantom()
        save(np.asarray(values, np.float32)[labels], path)

    return replace_sequence("seg", write)


nan_t2 = np.full(SHAPE, 50.0, np.float32)
nan_t2[3, 4, 5], nan_t2[6, 7, 8] = np.nan, np.inf

# id, builder, fragment from read_case and the Your data page, fragment from the CLI (None: accepted)
CASE_ROWS = [
    ("corrupt gzip", replace_sequence("t2", lambda p: p.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(400))),
     "corrupt or truncated", "corrupt or truncated"),
    ("truncated gzip", replace_sequence("t2", lambda p: p.write_bytes(
        gzip.compress(nib.Nifti1Image(phantom()[0][2], np.eye(4)).to_bytes())[:600])),
     "corrupt or truncated", "corrupt or truncated"),
    ("empty gzip", replace_sequence("t2", lambda p: p.write_bytes(gzip.compress(b""))),
     "corrupt or truncated", "corrupt or truncated"),
    ("empty file", replace_sequence("t2", lambda p: p.write_bytes(b"")), "empty (0 bytes)", "empty (0 bytes)"),
    ("text named .nii.gz", replace_sequence("flair", lambda p: p.write_text("not an image\n")),
     "corrupt or truncated", "corrupt or truncated"),
    ("4-D", replace_sequence("t2", volume(np.ones((*SHAPE, 2), np.int16))), "expected a 3-D volume",
     "expected a 3-D volume"),
    ("2-D", replace_sequence("t2", volume(np.ones(SHAPE[:2], np.int16))), "expected a 3-D volume",
     "expected a 3-D volume"),
    ("shape mismatch", replace_sequence("t2", volume(np.ones((24, 26, 19), np.int16))), "has shape (24, 26, 19) but",
     "has shape (24, 26, 19) but"),
    ("voxel-size mismatch", replace_sequence("t2", volume(np.ones(SHAPE, np.int16), np.diag([1, 1, 2.0, 1]))),
     "has voxel size (1.0, 1.0, 2.0) mm but", "has voxel size (1.0, 1.0, 2.0) mm but"),
    ("NaN/Inf", replace_sequence("t2", volume(nan_t2)), "t2 has 2 NaN/Inf voxels", "t2 has 2 NaN/Inf voxels"),
    ("all-zero T1c", all_zero_t1c, "T1c is all zeros", "T1c is all zeros"),
    ("no T1c", no_t1c, "T1c is missing", "T1c is missing"),
    ("unknown label", labels_with([0, 1, 2, 7]), "label values [1, 2, 7] fit no known scheme",
     "label values [1, 2, 7] fit no known scheme"),
    ("non-integer label", labels_with([0, 1.5, 2, 4]), "non-integer values", "non-integer values"),
    ("header claims 10000^3", replace_sequence("t2", lambda p: lying_header(p, (10000,) * 3)),
     "= 4.0 TB; the limit is", "= 4.0 TB; the limit is"),
    ("600^3 header, 2 kB of data", replace_sequence("t2", lambda p: lying_header(p, (600,) * 3, np.uint8)),
     "but the file holds", "but the file holds"),
    ("20 mm voxels", coarse_voxels, "resampled to 1 mm gives (461, 501, 381)",
     "resampled to 1 mm gives (461, 501, 381)"),
    ("dangling symlink", dangling, "t2 file is a broken link", "t2 file is a broken link"),
    ("folder named like a sequence", folder_named_like_a_sequence, "t2 is not a regular file",
     "t2 is not a regular file"),
    ("unreadable file", unreadable, "cannot be read", "cannot be read"),  # skipped as root: root reads any file
    ("symlinked file outside the root", symlink_outside, "outside the data root", None),
    ("manifest ../ path", manifest_to("{rel}/P9_t2.nii.gz"), "outside the data root", None),
    ("manifest absolute path", manifest_to("{t2}"), "outside the data root", None),
]  # fmt: skip


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data root with one good case evaluated into a user store, a small model, and a folder outside."""
    base = tmp_path_factory.mktemp("bad")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    good = good_case(root / "good")
    good_case(root / "good2")  # not evaluated yet
    case = read_case(good)
    torch.manual_seed(0)
    landmarks = fit_landmarks([(case.images, case.available)])
    model = save_model(build_model("deepmedic-lite"), base / "models" / "Tiny",
                       {"name": "Tiny", "normalisation": {"landmarks": landmarks}})  # fmt: skip
    store = base / "user.sqlite"
    with ResultStore(store) as results:
        summary = run_sweep(results, SweepConfig([str(model)], good, splits=(), root=root))
        assert summary.results_written == 1 and not summary.errors
    return {"root": root.resolve(), "outside": outside, "model": str(model), "store": store}


def store_rows(path: Path) -> list[tuple]:
    """Every result row (read with plain SQL, read only)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return sorted(db.execute("SELECT * FROM results"))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line in this process; (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def your_data(world, text: str, store: Path, monkeypatch) -> tuple[list[str], object]:
    """What the Your data page does with a typed path: resolve, inspect, evaluate.

    Returns the problems it would show and the sweep summary (None when stopped earlier)."""
    from ui.data import data_root, resolve_in_root

    monkeypatch.setenv("GBM_DATA_ROOT", str(world["root"]))
    try:
        path = resolve_in_root(text)
    except ValueError as error:
        return [str(error)], None
    from core.cases import inspect_path

    report = inspect_path(path, root=data_root())
    problems = [report["error"]] if report.get("error") else []
    problems += [r for c in report["cases"] for r in c.get("reasons") or []]
    if report.get("error"):
        return problems, None
    with ResultStore(store) as results:
        summary = run_sweep(results, SweepConfig([world["model"]], path, splits=(), root=data_root()))
    return problems, summary


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize(("name", "build", "fragment", "cli_fragment"), CASE_ROWS, ids=[r[0] for r in CASE_ROWS])
def test_bad_case(world, tmp_path, capsys, monkeypatch, name, build, fragment, cli_fragment):
    if name == "unreadable file" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    folder = world["root"] / "rows" / name.replace(" ", "_").replace("/", "_")
    shutil.rmtree(folder, ignore_errors=True)
    path = build(folder, world["outside"] / folder.name)
    store = tmp_path / "user.sqlite"
    shutil.copy(world["store"], store)
    before = store_rows(store)

    # read_case, confined to the data root as the app reads.
    with pytest.raises(CaseError, match=None) as error:
        for source in find_cases(path, world["root"]):
            read_case(source)
    assert fragment in str(error.value) and "\n" not in str(error.value)

    # The command line: a JSON report naming the problem, or (links followed) the case accepted.
    code, out, err = cli(capsys, "inspect", str(path))
    if cli_fragment is None:
        assert code == 0 and json.loads(out)["n_accepted"] == 1, out
    else:
        assert code == 1 and cli_fragment in out and "Traceback" not in out + err, out

    # The Your data page: rejected when inspected, nothing evaluated, nothing already written lost.
    text = os.path.relpath(path, world["root"])
    problems, summary = your_data(world, text, store, monkeypatch)
    assert any(fragment in p for p in problems), problems
    if summary is not None:
        assert summary.results_written == 0 and any(fragment in e for e in summary.errors), summary
    assert store_rows(store) == before


def test_paths_typed_outside_the_root_are_refused(world, tmp_path, monkeypatch):
    store = tmp_path / "user.sqlite"
    shutil.copy(world["store"], store)
    (world["root"] / "link_out").symlink_to(good_case(world["outside"] / "typed"), target_is_directory=True)
    for text in ("../outside/typed", str(world["outside"] / "typed"), "link_out", "nothing_here"):
        problems, summary = your_data(world, text, store, monkeypatch)
        assert summary is None and ("outside the data root" in problems[0] or "does not exist" in problems[0])
    with pytest.raises(CaseError, match="outside the data root"):
        find_cases(world["root"] / "link_out", world["root"])


def test_a_case_not_on_a_1mm_grid_is_scored_on_its_own_grid(world, tmp_path, capsys, monkeypatch):
    folder = non_1mm(world["root"] / "thick", world["outside"])
    case = read_case(folder)
    assert case.shape == (24, 26, 58) and case.original_grid.shape == SHAPE
    out = tmp_path / "pred.nii.gz"
    code, text, err = cli(capsys, "predict", "--model", world["model"], "--case", str(folder), "--out", str(out))
    assert code == 0, err
    report = json.loads(text)
    assert set(report["metrics"]) == {"tc", "wt", "et"} and "1 x 1 x 3 mm, 24 x 26 x 20 voxels" in report["scored_on"]
    assert nib.load(str(out)).shape == SHAPE
    store = tmp_path / "user.sqlite"
    shutil.copy(world["store"], store)
    problems, summary = your_data(world, "thick", store, monkeypatch)
    assert not problems and summary.results_written == 1 and not summary.errors
    assert len(store_rows(store)) == len(store_rows(world["store"])) + 3


# --------------------------------------------------------------------------- models


def edit_card(change):
    def build(folder: Path) -> None:
        card = json.loads((folder / "card.json").read_text())
        change(card)
        (folder / "card.json").write_text(json.dumps(card))

    return build


def pickled_weights(folder: Path) -> None:
    from core.model import sha256_file

    torch.save(build_model("deepmedic-lite").state_dict(), folder / "weights.safetensors")  # a pickle
    edit_card(lambda card: card.update(weights_sha256=sha256_file(folder / "weights.safetensors")))(folder)


def extra_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    from core.model import sha256_file

    state = load_file(str(folder / "weights.safetensors")) | {"extra.weight": torch.zeros(3)}
    save_file(state, str(folder / "weights.safetensors"))
    edit_card(lambda card: card.update(weights_sha256=sha256_file(folder / "weights.safetensors")))(folder)


MODEL_ROWS = [
    ("checksum mismatch", lambda f: (f / "weights.safetensors").write_bytes(
        (f / "weights.safetensors").read_bytes()[:-4] + b"\0\0\0\0"), "does not match the card's"),
    ("pickled weights", pickled_weights, "not a safetensors file"),
    ("card declares residual", edit_card(lambda c: c["architecture"].update(residual=True)),
     "does not match the card's architecture_sha256"),
    ("card declares other feature maps", edit_card(lambda c: c["architecture"].update(feature_maps=[30] * 8)),
     "wrong shape"),
    ("extra tensor", extra_tensor, "unexpected ['extra.weight']"),
    ("no weights", lambda f: (f / "weights.safetensors").unlink(), "no weights.safetensors"),
    ("card not JSON", lambda f: (f / "card.json").write_text("{"), "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "build", "fragment"), MODEL_ROWS, ids=[r[0] for r in MODEL_ROWS])
def test_bad_model(world, tmp_path, capsys, name, build, fragment):
    folder = tmp_path / "model"
    shutil.copytree(world["model"], folder)
    build(folder)
    with pytest.raises(ModelError) as error:
        load_model(folder)
    assert fragment in str(error.value) and "\n" not in str(error.value)

    out = tmp_path / "pred.nii.gz"
    out.write_bytes(b"written before")
    code, text, err = cli(capsys, "predict", "--model", str(folder), "--case", str(world["root"] / "good"), "--out",
                          str(out))  # fmt: skip
    assert code == 2 and not text and fragment in err and err.count("\n") == 1, err
    assert out.read_bytes() == b"written before"

    store = tmp_path / "user.sqlite"
    shutil.copy(world["store"], store)
    before = store_rows(store)
    try:
        with ResultStore(store) as results:  # what Your data's Evaluate button runs
            config = SweepConfig([str(folder)], world["root"] / "good2", splits=(), root=world["root"])
            summary = run_sweep(results, config)
        assert summary.results_written == 0 and any(fragment in e for e in summary.errors), summary
    except ModelError as error:  # an unreadable card stops the plan (the page lists only readable cards)
        assert fragment in str(error)
    assert store_rows(store) == before


def test_the_bundled_models_verify_their_architecture():
    for folder in sorted((ROOT / "models").glob("*/weights.safetensors")):  # DeepMedic folders (not ONNX ones)
        folder = folder.with_name("card.json")
        card = json.loads(folder.read_text())
        assert "architecture_sha256" in card
        assert load_model(folder.parent, fuse=False).config.residual == card["architecture"]["residual"]


# --------------------------------------------------------------------------- stores


def newer_schema(path: Path) -> None:
    ResultStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()  # the last connection: the WAL is checkpointed into the file


STORE_ROWS = [
    ("text file", lambda p: p.write_text("not a database\n" * 100), "file is not a database"),
    ("newer schema", newer_schema, "schema version 99 is newer than this code"),
    ("a folder", lambda p: p.mkdir(), "unable to open database file"),
]


@pytest.mark.parametrize(("name", "build", "fragment"), STORE_ROWS, ids=[r[0] for r in STORE_ROWS])
def test_bad_store(world, tmp_path, capsys, name, build, fragment):
    path = tmp_path / "store.sqlite"
    build(path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(StoreError) as error:
        ResultStore(path)
    assert fragment in str(error.value) and str(path) in str(error.value)
    code, text, err = cli(capsys, "evaluate", "--models", world["model"], "--cohort", str(world["root"] / "good"),
                          "--splits", "all", "--workers", "1", "--store", str(path))  # fmt: skip
    assert code == 2 and not text and fragment in err and err.count("\n") == 1, err
    assert (path.read_bytes() if path.is_file() else None) == before


# --------------------------------------------------------------------------- no traceback, in a real process


@pytest.mark.slow
def test_the_command_line_prints_one_line_not_a_traceback(world, tmp_path):
    huge = replace_sequence("t1c", lambda p: lying_header(p, (10000,) * 3))(tmp_path / "huge", tmp_path)
    bad_store = tmp_path / "bad.sqlite"
    bad_store.write_text("not a database\n")
    runs = [
        (["predict", "--model", world["model"], "--case", str(huge), "--out", str(tmp_path / "p.nii.gz")], "4.0 TB"),
        (["evaluate", "--models", world["model"], "--cohort", str(huge), "--store", str(bad_store)], "not a database"),
    ]
    for args, fragment in runs:
        result = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert result.returncode == 2 and fragment in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    help_text = subprocess.run([sys.executable, "-m", "core", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert "symbolic links" in help_text.stdout


# --------------------------------------------------------------------------- concurrent users


@pytest.mark.slow
def test_ten_sessions_switch_flair_off_on_a_stored_prediction_at_once(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from streamlit.testing.v1 import AppTest

    from tests.conftest import write_phantom_cohort

    manifest = write_phantom_cohort(tmp_path / "cohort", n=2, size=40)
    case = read_case(manifest.parent / "P0")
    torch.manual_seed(0)
    card = {"name": "TinyBraTS", "training": {"hospitals": ["public"]}, "sparsity": {"t1": 0, "t2": 0, "flair": 0},
            "normalisation": {"landmarks": fit_landmarks([(case.images, case.available)])}}  # fmt: skip
    model = save_model(build_model("deepmedic-lite"), tmp_path / "models" / "TinyBraTS", card)
    store = tmp_path / "demo.sqlite"
    with ResultStore(store) as results:
        config = SweepConfig([str(model)], manifest, "simulated", splits=("train",), per_hospital=1)
        summary = run_sweep(results, config)
        assert summary.results_written == 8 and not summary.errors  # P0 with every combination
    monkeypatch.setenv("GBM_DEMO_COHORT", str(manifest.parent))
    monkeypatch.setenv("GBM_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("GBM_DEMO_STORE", str(store))
    monkeypatch.setenv("GBM_STORE", str(tmp_path / "user.sqlite"))
    before = store_rows(store)

    # Compiling the page in ten threads at once trips CPython 3.11.7's parser ("SystemError: AST
    # constructor recursion depth mismatch"), not the app: a server compiles a page once for all
    # its sessions, but each AppTest has its own script cache and compiles again on a run. So the
    # sessions open one after another, and their compilations take turns.
    import threading

    from streamlit.runtime.scriptrunner import script_cache

    compiling, compile_page = threading.Lock(), script_cache.ScriptCache.get_bytecode

    def one_at_a_time(self, path):
        with compiling:
            return compile_page(self, path)

    monkeypatch.setattr(script_cache.ScriptCache, "get_bytecode", one_at_a_time)
    sessions = [AppTest.from_file(str(ROOT / "views" / "explorer.py"), default_timeout=300).run() for _ in range(10)]
    assert not any(at.exception for at in sessions)

    def switch(at: AppTest) -> str:
        at.toggle(key="use_flair_P0").set_value(False).run()
        if at.exception:
            return f"switch: {at.exception}"
        dice = [m for m in at.metric if m.label == "Dice"]
        shown = " ".join(m.value for m in at.markdown)
        notes = " / ".join(e.value for e in (*at.info, *at.warning, *at.error))  # why, when nothing is shown
        ok = len(dice) == 3 and "missing FLAIR" in shown and "from the stored results" in shown
        return "" if ok else f"shown: {shown} {notes}"

    with ThreadPoolExecutor(10) as pool:
        problems = list(pool.map(switch, sessions))
    assert problems == [""] * 10, problems
    assert store_rows(store) == before
