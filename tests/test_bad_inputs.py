"""A catalogue of bad inputs and faults, each run through the real ``hybrid`` command on a copy
of a finished tiny case (issue 15).

Every entry asserts:
- the exit code (2 for a mistake or a fault the project detects; 0 where the fault is repaired
  by redoing a stage, 130 for an interrupt);
- exactly one ``hybrid: error:`` line, naming the file and the key (or the file written), and
  no traceback;
- what happened to earlier results: byte-identical (``kept``), or consistently replaced
  (``redone``: the command redid the damaged stage and every stage is current afterwards).

The entries are data: ``CATALOGUE`` below. Faults that need a running process (a full disk
after MPI started, an interrupt) are at the end of the file.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from helpers import ROOT, edit_toml, mpi_env, mpirun_prefix, popen_cli, run_cli, small_case

TINY = dict(train=4, test=2,
            surrogate={"members": "2", "epochs": "3", "grid": "16", "modes": "4", "width": "8",
                       "layers": "2", "batch": "2", "time": '"one-shot"'},
            time={"t_end": "0.01", "outputs": "3"}, constraints={"compare": '["raw", "per-cell"]'})
STAGES = ("solve", "train", "predict", "validate", "export")
WITH_LIMIT = Path(__file__).with_name("file_size_limit.py")


@dataclass(frozen=True)
class Fault:
    """One bad input: ``edit`` changes the case directory; the command then must fail as stated."""
    name: str
    edit: Callable[[Path], None]
    says: tuple[str, ...]             # substrings of the one error line (file, key, what)
    command: str = "run"
    ranks: int = 1
    code: int = 2
    results: str = "kept"             # kept: byte-identical; redone: consistently replaced
    resume_state: bool = False        # the failed stage may leave train/checkpoints
                                      # of its own (keyed by its hash)


def _set(section: str, key: str, value: str) -> Callable[[Path], None]:
    def edit(case: Path) -> None:
        toml = case / "case.toml"
        toml.write_text(edit_toml(toml.read_text(), section, key, value))
    return edit


def _text(old: str, new: str) -> Callable[[Path], None]:
    def edit(case: Path) -> None:
        toml = case / "case.toml"
        text = toml.read_text()
        assert re.search(old, text, flags=re.M), old
        toml.write_text(re.sub(old, new, text, count=1, flags=re.M))
    return edit


def _write(name: str, content: bytes | str) -> Callable[[Path], None]:
    def edit(case: Path) -> None:
        path = case / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return edit


def _both(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(case: Path) -> None:
        for e in edits:
            e(case)
    return edit


def _damage(relative: str, how: str) -> Callable[[Path], None]:
    """Damage a result file: truncate it, overwrite bytes in the middle, or delete it."""
    def edit(case: Path) -> None:
        path = case / "results" / relative
        if how == "truncate":
            with open(path, "r+b") as f:
                f.truncate(path.stat().st_size // 2)
        elif how == "scribble":
            size = path.stat().st_size
            with open(path, "r+b") as f:
                f.seek(size // 3)
                f.write(b"\x00garbage\xff" * 64)
        elif how == "delete":
            path.unlink()
        elif how == "garbage":
            path.write_text("{ not json")
    return edit


def _case_toml_is_a_directory(case: Path) -> None:
    (case / "case.toml").unlink()
    (case / "case.toml").mkdir()


def _mesh_file(content: str) -> Callable[[Path], None]:
    return _both(_write("mesh.msh", content), _text(r'^file = .*$', 'file = "mesh.msh"'))


K = "case.toml"
CATALOGUE = [
    # the file itself
    Fault("toml-syntax", _write(K, "[time\nt_end = 1\n"), (K, "TOML syntax error")),
    Fault("not-utf8", _write(K, b"[case]\nname = \"\xff\xfe\"\n"), (K,)),
    Fault("empty-file", _write(K, ""), (K, "missing")),
    Fault("case-toml-is-a-directory", _case_toml_is_a_directory, (K,)),
    Fault("unknown-section", _set("postprocess", "plots", "true"), (K, "postprocess")),
    Fault("unknown-key", _set("time", "dtt", "0.1"), (K, "time.dtt")),
    Fault("misspelled-key", _set("surrogate", "member", "2"), (K, "surrogate.member")),
    Fault("duplicate-key", _text(r"^t_end = .*$", "t_end = 0.01\nt_end = 0.02"),
          (K, "TOML syntax error")),
    # [time]
    Fault("dt-string", _set("time", "dt", '"fast"'), (K, "time.dt")),
    Fault("t-end-negative", _set("time", "t_end", "-1"), (K, "time.t_end")),
    Fault("dt-above-t-end", _set("time", "dt", "1.0"), (K, "time.dt", "t_end")),
    Fault("dt-nan", _set("time", "dt", "nan"), (K, "time.dt")),
    Fault("t-end-inf", _set("time", "t_end", "inf"), (K, "time.t_end")),
    Fault("outputs-zero", _set("time", "outputs", "0"), (K, "time.outputs")),
    Fault("outputs-float", _set("time", "outputs", "2.5"), (K, "time.outputs")),
    Fault("outputs-huge", _set("time", "outputs", "1000000"),
          (K, "time.outputs", "GiB")),
    Fault("dt-tiny", _set("time", "dt", "1e-300"), (K, "time.dt", "steps")),
    Fault("theta-below-half", _set("time", "theta", "0.3"), (K, "time.theta")),
    # [data]
    Fault("train-zero", _set("data", "train", "0"), (K, "data.train")),
    Fault("test-negative", _set("data", "test", "-1"), (K, "data.test")),
    Fault("test-zero-predict", _set("data", "test", "0"), (K, "data.test"), command="predict"),
    Fault("train-one", _set("data", "train", "1"), (K, "data.train", "at least 2")),
    Fault("train-bool", _set("data", "train", "true"), (K, "data.train")),
    # [surrogate]
    Fault("members-zero", _set("surrogate", "members", "0"), (K, "surrogate.members")),
    Fault("epochs-string", _set("surrogate", "epochs", '"many"'), (K, "surrogate.epochs")),
    Fault("grid-one", _set("surrogate", "grid", "1"), (K, "surrogate.grid")),
    Fault("model-unknown", _set("surrogate", "model", '"unet"'), (K, "surrogate.model")),
    Fault("lr-negative", _set("surrogate", "lr", "-1"), (K, "surrogate.lr")),
    Fault("modes-zero", _set("surrogate", "modes", "0"), (K, "surrogate.modes")),
    Fault("time-unknown", _set("surrogate", "time", '"recurrent"'), (K, "surrogate.time")),
    Fault("autoregressive-heteroscedastic",
          _both(_set("surrogate", "time", '"autoregressive"'),
                _set("surrogate", "heteroscedastic", "true")),
          (K, "surrogate.heteroscedastic", "one-shot"), command="train"),
    Fault("lr-diverges", _set("surrogate", "lr", "1e6"), (K, "surrogate.lr", "diverged"),
          command="train", resume_state=True),
    # [pde]
    Fault("family-unknown", _set("pde", "family", '"navier"'), (K, "pde.family")),
    Fault("k-model-unknown", _set("pde", "k", '"cubic"'), (K, "pde.k")),
    Fault("u-star-missing", _text(r"^u_star = \{ uniform.*$", ""), (K, "u_star")),
    Fault("k-min-negative", _set("pde", "k_min", "-1"), (K, "pde.k_min")),
    Fault("k-min-above-k-max", _set("pde", "k_min", "2"), (K, "pde.k_min", "k_max")),
    Fault("smoothing-zero", _set("pde", "smoothing", "0"), (K, "pde.smoothing")),
    Fault("coefficient-twice", _set("pde", "k_max", "1.0"), (K, "k_max")),
    # expressions
    Fault("source-syntax", _set("pde", "source", '"x +"'), (K, "pde.source")),
    Fault("source-import",
          _set("pde", "source", "\"__import__('os').system('touch /tmp/hybrid-pwned')\""),
          (K, "pde.source")),
    Fault("source-unknown-name", _set("pde", "source", '"unknown_name * x"'),
          (K, "pde.source", "unknown_name")),
    Fault("source-dunder", _set("pde", "source", '"().__class__"'), (K, "pde.source")),
    Fault("source-lambda", _set("pde", "source", '"(lambda: 1)()"'), (K, "pde.source")),
    Fault("source-not-finite", _set("pde", "source", '"where(t > 0.005, log(-1), 0)"'),
          (K, "pde.source", "not finite"), command="solve", ranks=2),
    Fault("initial-syntax", _set("initial", "value", '"sin("'), (K, "initial.value")),
    Fault("initial-open", _set("initial", "value", "\"open('/etc/passwd')\""),
          (K, "initial.value")),
    Fault("initial-kind-unknown", _set("initial", "kind", '"noise"'), (K, "initial.kind")),
    Fault("initial-sqrt-minus-one", _set("initial", "value", '"sqrt(-1)"'),
          (K, "initial.value", "not finite"), command="solve"),
    Fault("initial-overflow", _set("initial", "value", '"(x+2)**10**10"'),
          (K, "initial.value", "not finite"), command="solve"),
    Fault("initial-attribute", _set("initial", "value", '"x.real"'), (K, "initial.value")),
    # [boundary.*]
    Fault("boundary-type-unknown", _set("boundary.left", "type", '"robin"'),
          (K, "boundary.left.type")),
    Fault("dirichlet-without-value", _text(r'^value = "1"$', ""), (K, "boundary.left")),
    Fault("boundary-unknown-name", _both(_set("boundary.middle", "type", '"neumann"'),
                                         _set("boundary.middle", "flux", '"0"')),
          (K, "boundary.middle")),
    Fault("periodic-without-partner", _text(r'^type = "dirichlet"$', 'type = "periodic"'),
          (K, "boundary.left")),
    Fault("flux-and-derivative", _set("boundary.right", "normal_derivative", '"0"'),
          (K, "boundary.right")),
    Fault("boundary-value-not-finite", _set("boundary.left", "value", '"1 + log(t - 1)"'),
          (K, "boundary.left.value", "not finite"), command="solve"),
    # [mesh]
    Fault("mesh-file-missing", _set("mesh", "file", '"nowhere.msh"'), (K, "mesh.file")),
    Fault("mesh-file-garbage", _mesh_file("this is not a mesh\n"), (K, "mesh.file")),
    Fault("mesh-file-and-generate", _set("mesh", "generate", '{ shape = "interval", cells = 10 }'),
          (K, "mesh")),
    Fault("control-volumes-unknown", _set("mesh", "control_volumes", '"hex"'),
          (K, "mesh.control_volumes")),
    Fault("boundary-tag-missing", _set("mesh", "boundaries", "{ left = 99, right = 2 }"),
          (K, "mesh.boundaries")),
    Fault("generate-shape-unknown",
          _both(_text(r"^file = .*$", ""), _text(r"^boundaries = .*$", ""),
                _set("mesh", "generate", '{ shape = "sphere" }')),
          (K, "mesh.generate.shape")),
    Fault("generate-too-fine", _both(_text(r"^file = .*$", ""), _text(r"^boundaries = .*$", ""),
                                     _set("mesh", "generate", '{ shape = "interval", h = 1e-9 }')),
          (K, "mesh.generate")),
    Fault("generate-key-of-other-shape",
          _both(_text(r"^file = .*$", ""), _text(r"^boundaries = .*$", ""),
                _set("mesh", "generate", '{ shape = "interval", radius = 2 }')),
          (K, "mesh.generate.radius")),
    # [parameters]
    Fault("uniform-reversed",
          _text(r"^u_star = \{ uniform.*$", "u_star = { uniform = [0.7, 0.55] }"),
          (K, "parameters.u_star")),
    Fault("distribution-unknown", _text(r"^u_star = \{ uniform.*$", "u_star = { beta = [1, 2] }"),
          (K, "parameters.u_star")),
    Fault("parameter-reserved-name", _set("parameters", "x", "1.0"), (K, "parameters.x")),
    Fault("test-parameter-unknown", _set("parameters.test", "w", "0.5"), (K, "parameters.test.w")),
    Fault("choice-empty", _text(r"^u_star = \{ choice.*$", "u_star = { choice = [] }"),
          (K, "parameters.test.u_star")),
    Fault("normal-negative-std",
          _text(r"^u_star = \{ uniform.*$", "u_star = { normal = [0.6, -1] }"),
          (K, "parameters.u_star")),
    # [constraints], [solver], [case], [output]
    Fault("variant-unknown", _set("constraints", "compare", '["raw", "magic"]'),
          (K, "constraints.compare", "magic")),
    Fault("conservation-unknown", _set("constraints", "conservation", '"sometimes"'),
          (K, "constraints.conservation")),
    Fault("sigma-negative", _set("constraints", "sigma", "-1"), (K, "constraints.sigma")),
    Fault("covariance-unknown", _set("constraints", "covariance", '"full"'),
          (K, "constraints.covariance")),
    Fault("ensemble-covariance-one-member", _both(_set("constraints", "covariance", '"ensemble"'),
                                                  _set("surrogate", "members", "1")),
          (K, "constraints.covariance")),
    Fault("calibrate-string", _set("constraints", "calibrate", '"yes"'),
          (K, "constraints.calibrate")),
    Fault("flux-inflations-empty", _set("constraints", "flux_inflations", "[]"),
          (K, "constraints.flux_inflations")),
    Fault("flux-inflations-negative", _set("constraints", "flux_inflations", "[1, -3]"),
          (K, "constraints.flux_inflations", "> 0")),
    Fault("flux-inflations-twice", _set("constraints", "flux_inflations", "[1, 1.0]"),
          (K, "constraints.flux_inflations", "twice")),
    Fault("newton-max-it-zero", _set("solver", "newton_max_it", "0"), (K, "solver.newton_max_it")),
    Fault("seed-negative", _set("case", "seed", "-1"), (K, "case.seed")),
    Fault("name-not-string", _set("case", "name", "5"), (K, "case.name")),
    Fault("output-dir-is-a-file",
          _both(_set("output", "dir", '"taken"'), _write("taken", "a file\n")),
          (K, "output.dir", "cannot be written"), ranks=2),
    # damaged results between runs: the stage is redone and every stage is current afterwards
    Fault("dataset-truncated", _damage("solve/dataset.h5", "truncate"), (), code=0,
          results="redone"),
    Fault("dataset-scribbled", _damage("solve/dataset.h5", "scribble"), (), code=0,
          results="redone"),
    Fault("member-truncated", _damage("train/member-0.pt", "truncate"), (), code=0,
          results="redone"),
    Fault("predictions-deleted", _damage("predict/predictions.h5", "delete"), (), code=0,
          results="redone"),
    Fault("variants-scribbled", _damage("predict/variants.h5", "scribble"), (), code=0,
          results="redone"),
    Fault("stage-json-garbage", _damage("train/stage.json", "garbage"), (), code=0,
          results="redone"),
    Fault("export-series-deleted", _damage("export/test-001.h5", "delete"), (), code=0,
          results="redone"),
]


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny stefan-1d after ``hybrid run``: every stage current."""
    case = small_case("stefan-1d", tmp_path_factory.mktemp("finished"), **TINY)
    proc = run_cli(["run", str(case), "--quiet"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return case


def _copy(finished: Path, tmp_path: Path) -> Path:
    case = tmp_path / finished.name
    shutil.copytree(finished, case)
    return case


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("hybrid: error:")]


def _all_current(case: Path) -> None:
    proc = run_cli(["run", str(case), "--quiet"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for stage in STAGES:
        assert f"{stage}: up to date" in proc.stdout, (stage, proc.stdout)


@pytest.mark.parametrize("fault", CATALOGUE, ids=[f.name for f in CATALOGUE])
def test_catalogue(finished, tmp_path, fault):
    case = _copy(finished, tmp_path)
    before = _tree_digest(case / "results")
    fault.edit(case)
    proc = run_cli([fault.command, str(case), "--quiet"], ranks=fault.ranks)
    assert proc.returncode == fault.code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "MPI_ABORT" not in proc.stderr, proc.stderr[-3000:]
    lines = _error_lines(proc.stderr)
    if fault.code == 2:
        assert len(lines) == 1, proc.stderr[-3000:]
        for text in fault.says:
            assert text in lines[0], (text, lines[0])
    else:
        assert not lines, lines
    if fault.results == "kept":
        after = _tree_digest(case / "results")
        if fault.resume_state:
            before, after = ({k: v for k, v in d.items() if not k.startswith("train/checkpoints/")}
                             for d in (before, after))
        assert after == before
    else:
        _all_current(case)
    assert not Path("/tmp/hybrid-pwned").exists()


def test_the_catalogue_is_large_enough():
    """Issue 15 asks for at least 60 bad inputs and faults run through the real command (the
    catalogue above and the process faults below)."""
    process_faults = len(FULL_DISK) + 2 + len(BAD_PREDICTIONS) + 3
    assert len(CATALOGUE) + process_faults >= 60
    assert len({f.name for f in CATALOGUE}) == len(CATALOGUE)


# --- faults of a running process -------------------------------------------------------------

# (stage, ranks): a 20 kB file-size limit set after MPI started makes the stage's first large
# write fail with EFBIG, as a full disk would with ENOSPC
FULL_DISK = [("solve", 1), ("solve", 2), ("train", 2), ("predict", 1), ("predict", 2),
             ("validate", 2), ("export", 2)]


@pytest.mark.parametrize("stage,ranks", FULL_DISK, ids=[f"{s}-{r}rank" for s, r in FULL_DISK])
def test_a_full_disk_is_one_message_and_exit_2(finished, tmp_path, stage, ranks):
    """Defect 10: a write that fails mid-stage ends in one message naming the file, exit 2 on
    every rank, no segfault or MPI_Abort; every earlier result keeps its bytes, so every stage
    is still current once there is space again."""
    import subprocess

    case = _copy(finished, tmp_path)
    before = _tree_digest(case / "results")
    command = [sys.executable, str(WITH_LIMIT), "20000", stage, str(case), "--quiet", "--force"]
    if ranks > 1:
        command = mpirun_prefix(ranks) + command
    proc = subprocess.run(command, cwd=ROOT, env=mpi_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert ("Traceback" not in proc.stderr and "MPI_ABORT" not in proc.stderr
            and "SEGV" not in proc.stderr), proc.stderr[-3000:]
    lines = _error_lines(proc.stderr)
    assert (len(lines) == 1 and "cannot be written" in lines[0]
            and "File too large" in lines[0]), proc.stderr[-3000:]
    assert re.search(rf"results/{stage}/\S+: cannot be written", lines[0]), lines[0]
    after = _tree_digest(case / "results")
    if stage == "train":   # --force starts training afresh: the
                           # old checkpoints go, the members stay
        before = {k: v for k, v in before.items() if "checkpoints" not in k}
    assert {k: after.get(k) for k in before} == before
    assert not [k for k in after if ".tmp-" in k]
    _all_current(case)


def test_an_interrupt_under_mpirun_says_so_and_keeps_the_members(finished, tmp_path):
    """Ctrl-C to ``mpirun -n 2 hybrid train`` (mpirun passes SIGTERM to the ranks): the
    'interrupted' message, finished members intact, no traceback."""
    case = _copy(finished, tmp_path)
    toml = case / "case.toml"
    toml.write_text(edit_toml(edit_toml(toml.read_text(), "surrogate", "epochs", "100000"),
                              "surrogate", "patience", "100000"))
    proc = popen_cli(["train", str(case), "--quiet"], ranks=2)
    time.sleep(10)   # MPI and torch started, training under way
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "hybrid: interrupted" in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert not list((case / "results" / "train").glob(".*.tmp-*"))


def test_a_sigterm_to_one_process_is_an_interrupt(finished, tmp_path):
    """SIGTERM to a serial ``hybrid train`` is an interrupt: message, exit 130."""
    case = _copy(finished, tmp_path)
    toml = case / "case.toml"
    toml.write_text(edit_toml(edit_toml(toml.read_text(), "surrogate", "epochs", "100000"),
                              "surrogate", "patience", "100000"))
    proc = popen_cli(["train", str(case), "--quiet"])
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, stderr[-3000:])
    assert "hybrid: interrupted" in stderr and "Traceback" not in stderr


# --- bad prediction files for hybrid constrain ------------------------------------------------

def _prediction(case: Path, path: Path, change: Callable[[dict], None]) -> Path:
    import h5py
    import numpy as np

    with h5py.File(case / "results/solve/dataset.h5") as f:
        u, flux = f["test/u"][()], f["test/flux"][()]
    arrays = {"u_mean": u.copy(), "u_var": np.full(u.shape, 1e-4), "flux_mean": flux.copy(),
              "flux_var": np.full(flux.shape, 1e-6)}
    change(arrays)
    with h5py.File(path, "w") as f:
        for name, values in arrays.items():
            f[name] = values
    return path


def _set_item(name, index, value):
    def change(arrays):
        arrays[name][index] = value
    return change


BAD_PREDICTIONS = [   # (what, change of a good file, the dataset named)
    ("missing-u-var", lambda a: a.pop("u_var"), "u_var"),
    ("flux-var-without-flux-mean", lambda a: a.pop("flux_mean"), "flux_mean"),
    ("wrong-shape", lambda a: a.update(u_mean=a["u_mean"][:, :, :-1]), "u_mean"),
    ("too-few-scenarios", lambda a: a.update(u_mean=a["u_mean"][:1], u_var=a["u_var"][:1]),
     "u_mean"),
    ("nan-in-mean", _set_item("u_mean", (0, 1, 3), float("nan")), "u_mean"),
    ("negative-variance", _set_item("flux_var", (1, 0, 2), -1.0), "flux_var"),
    ("inf-in-flux", _set_item("flux_mean", (0, 0, 0), float("inf")), "flux_mean"),
    ("wrong-initial-state", _set_item("u_mean", (0, 0, 5), 7.0), "u_mean"),
    ("deviations-without-flux-deviations", lambda a: a.update(u_dev=a["u_mean"][:, None] * 0),
     "u_dev"),
]


@pytest.mark.parametrize("what,change,dataset", BAD_PREDICTIONS,
                         ids=[b[0] for b in BAD_PREDICTIONS])
def test_a_bad_prediction_file_is_one_message(finished, tmp_path, what, change, dataset):
    case = _copy(finished, tmp_path)
    before = _tree_digest(case / "results")
    bad = _prediction(case, tmp_path / "bad.h5", change)
    proc = run_cli(["constrain", str(case), "--prediction", str(bad), "--name", "mine"])
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{bad}: {dataset}:" in lines[0], lines[0]
    assert _tree_digest(case / "results") == before


def test_constrain_refuses_a_missing_file_and_a_bad_name(finished, tmp_path):
    case = _copy(finished, tmp_path)
    for args, says in ((["--prediction", str(tmp_path / "none.h5"), "--name", "x"],
                        "--prediction: does not exist"),
                       (["--prediction", str(tmp_path / "none.h5"), "--name", "../up"],
                        "--name: '../up' is not")):
        proc = run_cli(["constrain", str(case), *args])
        assert proc.returncode == 2 and len(_error_lines(proc.stderr)) == 1, proc.stderr[-2000:]
        assert says in _error_lines(proc.stderr)[0]


def test_a_mistake_found_on_one_rank_alone_ends_the_job(finished, tmp_path):
    """A CaseError on rank 1 only would leave rank 0 in the next collective forever: rank 1
    waits HYBRID_EXIT_GRACE seconds for the others, then says what it found and ends the job
    with exit code 2."""
    import subprocess

    case = _copy(finished, tmp_path)
    command = mpirun_prefix(2) + [sys.executable,
                                  str(Path(__file__).with_name("rank_local_failure.py")),
                                  "train", str(case), "--quiet", "--force"]
    start = time.time()
    proc = subprocess.run(command, cwd=ROOT, env=mpi_env({"HYBRID_EXIT_GRACE": "3"}),
                          capture_output=True, text=True, timeout=120)
    assert time.time() - start < 100
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert ("hybrid: error (rank 1): " in proc.stderr
            and "surrogate.grid: a mistake only rank 1 sees" in proc.stderr)
    assert "Traceback" not in proc.stderr


_FAILS_INSIDE_A_COLLECTIVE_CALL = """
import sys
from mpi4py import MPI
from hybrid.parallel import collective
comm = MPI.COMM_WORLD
try:
    with collective(comm):
        if comm.rank == 1:
            raise ValueError("only rank 1 fails")
        comm.allreduce(1.0)   # rank 0 waits here for rank 1, which never comes
except ValueError as error:
    print(f"rank {comm.rank} raised: {error}", file=sys.stderr, flush=True)
    comm.Abort(3)
"""


def test_a_rank_that_fails_inside_a_collective_call_of_the_block_ends_the_job():
    """``collective``'s arrival check runs on a duplicate communicator, so a rank that failed
    while the others sit in one of the block's own collective calls (a distributed solve)
    raises its error after HYBRID_EXIT_GRACE seconds instead of waiting with them forever."""
    import subprocess

    command = mpirun_prefix(2) + [sys.executable, "-c", _FAILS_INSIDE_A_COLLECTIVE_CALL]
    start = time.time()
    proc = subprocess.run(command, cwd=ROOT, env=mpi_env({"HYBRID_EXIT_GRACE": "2"}),
                          capture_output=True, text=True, timeout=60)
    assert time.time() - start < 40
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-3000:])
    assert "rank 1 raised: only rank 1 fails" in proc.stderr
