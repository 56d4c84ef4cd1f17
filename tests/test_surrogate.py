"""Surrogates: the FNO's tensor contract, SoftC's residual, training determinism, resume,
safe checkpoints and the predict stage."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from helpers import popen_cli, run_cli, small_case
from hybrid.surrogates.fno import FNO, SpectralConv

ROOT = Path(__file__).resolve().parents[1]

TINY = {"members": "2", "epochs": "6", "grid": "32", "modes": "8", "width": "8", "layers": "2",
        "batch": "4"}


@pytest.mark.parametrize("dim,grid", [(1, (40,)), (2, (20, 16)), (3, (8, 8, 6))])
def test_fno_tensor_contract(dim, grid):
    model = FNO(in_channels=5, out_channels=7, dim=dim, modes=4, width=8, layers=2, padding=2)
    x = torch.randn(3, 5, *grid)
    y = model(x)
    assert y.shape == (3, 7, *grid)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_spectral_conv_commutes_with_periodic_shifts_and_keeps_low_modes():
    conv = SpectralConv(2, 3, (5, 4))
    x = torch.randn(1, 2, 16, 12)
    assert torch.allclose(conv(torch.roll(x, (3, 5), (-2, -1))),
                          torch.roll(conv(x), (3, 5), (-2, -1)), atol=1e-5)
    # a pure high-frequency input (beyond the kept modes) is filtered out
    i = torch.arange(16).reshape(-1, 1).float()
    high = torch.cos(2 * np.pi * 8 * i / 16).expand(16, 12).reshape(1, 1, 16, 12).repeat(1, 2, 1, 1)
    assert conv(high).abs().max() < 1e-5


def test_softc_residual_vanishes_on_an_exact_discrete_solution():
    """u = a t + a x²/(2k) solves u_t = k u_xx exactly, and centred differences are exact on it."""
    from types import SimpleNamespace

    from hybrid.case.expressions import compile_expression
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.shapes import generate
    from hybrid.surrogates.data import Normaliser, build_inputs
    from hybrid.surrogates.softc import gpme_residual_penalty
    from hybrid.surrogates.transfer import Transfer

    mesh = generate({"shape": "interval", "cells": 64}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    transfer = Transfer.build(mesh, cv, (33,))
    k, a = 0.7, 2.0
    times = np.linspace(0, 0.5, 6)
    u0 = a * cv.centre[:, 0] ** 2 / (2 * k)
    params = np.array([[k]])
    norm = Normaliser(np.zeros(1), np.ones(1), 0.0, 1.0, 1.0, 1.0)
    inputs = build_inputs(transfer, u0[None], params, norm)
    case = SimpleNamespace(pde={"family": "gpme", "k": "constant",
                                "source": compile_expression("0")},
                           display_file="case.toml")
    penalty = gpme_residual_penalty(case, transfer, inputs, norm, times, params, ["k"])
    increments = torch.tensor(a * times[1:], dtype=torch.float32).reshape(1, 5, 1).expand(1, 5, 33)
    exact = torch.cat([increments, torch.zeros(1, 5, 33)], dim=1)
    assert float(penalty(exact, np.array([0]))) < 1e-8
    wrong = torch.cat([1.5 * increments, torch.zeros(1, 5, 33)], dim=1)
    # residual 0.5 a everywhere, scaled by Δt̄ / σ_Δu = 0.1: penalty (0.1 · 0.5 · 2)² = 0.01
    assert float(penalty(wrong, np.array([0]))) == pytest.approx(0.01, rel=1e-3)


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory):
    """A small diffusion case solved once, copied per test."""
    base = tmp_path_factory.mktemp("surrogate")
    path = small_case(ROOT / "cases" / "diffusion-1d", base, train=8, test=3, surrogate=TINY,
                      time={"t_end": "0.2", "outputs": "4"})
    proc = run_cli(["solve", str(path), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    return path


def _copy(case: Path, dest: Path, **surrogate) -> Path:
    import shutil

    target = dest / case.name
    shutil.copytree(case, target)
    text = (target / "case.toml").read_text()
    for key, value in surrogate.items():
        text = text.replace(f"{key} = {TINY[key]}", f"{key} = {value}")
    (target / "case.toml").write_text(text)
    return target


def test_predict_writes_ensemble_statistics(tiny_case, tmp_path):
    case = _copy(tiny_case, tmp_path)
    proc = run_cli(["predict", str(case), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    assert "ensemble mean relative L2" in proc.stdout
    with h5py.File(case / "results" / "predict" / "predictions.h5", "r") as f:
        u_mean, u_var, u_dev = f["u_mean"][()], f["u_var"][()], f["u_dev"][()]
        flux_mean, flux_dev = f["flux_mean"][()], f["flux_dev"][()]
        assert f["surrogate_seconds"].shape == (3,) and f["solver_seconds"].shape == (3,)
    with h5py.File(case / "results" / "solve" / "dataset.h5", "r") as f:
        truth = f["test/u"][()]
        flux = f["test/flux"][()]
    assert u_mean.shape == truth.shape and u_dev.shape == (3, 2, *truth.shape[1:])
    assert flux_mean.shape == flux.shape and flux_dev.shape == (3, 2, *flux.shape[1:])
    # the initial state is given, not predicted
    np.testing.assert_array_equal(u_mean[:, 0], truth[:, 0])
    np.testing.assert_allclose(u_dev.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(u_var, (u_dev ** 2).sum(axis=1) / (2 - 1), rtol=1e-10, atol=1e-14)
    assert (u_var[:, 1:] > 0).all()                              # members differ


@pytest.mark.parallel(nprocs=2)
def test_training_does_not_depend_on_the_number_of_ranks(tiny_case, tmp_path, comm):
    """Members trained at 2 ranks (one each) equal members trained on one rank."""
    _same_members_at_one_and_two_ranks(tiny_case, tmp_path, comm)


@pytest.mark.parallel(nprocs=2)
def test_autoregressive_training_does_not_depend_on_the_number_of_ranks(tiny_case, tmp_path, comm):
    """The same for autoregressive members, whose samples and input noise come from the
    member's own generators: two-level steps with the scaled loss, the paths the default
    autoregressive member (test_autoregressive_members_predict_the_initial_state_exactly)
    does not take."""
    _same_members_at_one_and_two_ranks(tiny_case, tmp_path, comm,
                                       surrogate='time = "autoregressive"\nrollout_history = 2\n'
                                                 'rollout_loss = "scaled"')


def _same_members_at_one_and_two_ranks(tiny_case, tmp_path, comm, surrogate: str = ""):
    from mpi4py import MPI

    from hybrid.case import load_case
    from hybrid.stages.train import run_train

    def copy(dest):
        target = _copy(tiny_case, dest)
        if surrogate:
            text = (target / "case.toml").read_text().replace("layers = 2",
                                                              f"layers = 2\n{surrogate}")
            (target / "case.toml").write_text(text)
        return target

    root = Path(comm.bcast(str(tmp_path) if comm.rank == 0 else None))
    if comm.rank == 0:
        serial = copy(root / "serial")
        run_train(load_case(serial), comm=MPI.COMM_SELF, progress=False)
        copy(root / "parallel")
    comm.Barrier()
    par = root / "parallel" / tiny_case.name
    run_train(load_case(par), comm=comm, progress=False)
    if comm.rank == 0:
        for m in range(2):
            a = torch.load(root / "serial" / tiny_case.name / "results/train" / f"member-{m}.pt",
                           weights_only=True)
            b = torch.load(par / "results/train" / f"member-{m}.pt", weights_only=True)
            if "rollout_history = 2" in surrogate:
                assert a["config"]["history"] == 2
            for key in a["model"]:
                assert torch.equal(a["model"][key], b["model"][key]), key


def test_training_resumes_after_a_kill(tiny_case, tmp_path):
    case = _copy(tiny_case, tmp_path, epochs=40, members=1)
    ckpt = case / "results" / "train" / "checkpoints" / "member-0.pt"
    proc = popen_cli(["train", str(case), "--quiet"])
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint was written"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = torch.load(ckpt, weights_only=True)
    assert 0 < saved["epoch"] < 40
    assert not (case / "results" / "train" / "member-0.pt").exists()
    rerun = run_cli(["train", str(case)])
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed at epoch" in rerun.stdout
    final = torch.load(case / "results" / "train" / "member-0.pt", weights_only=True)
    history = final["history"]
    stopped_early = len(history) < 40
    assert len(history) == 40 or stopped_early
    # the resumed run did not start over: its history begins with the killed run's epochs
    np.testing.assert_array_equal(history[: saved["epoch"]].numpy(), saved["history"].numpy())


def test_corrupt_checkpoint_is_a_clear_error(tiny_case, tmp_path):
    case = _copy(tiny_case, tmp_path, members=1)
    ckpt = case / "results" / "train" / "checkpoints" / "member-0.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint at all")
    proc = run_cli(["train", str(case), "--quiet"])
    assert proc.returncode == 2
    assert "cannot be read" in proc.stderr and "Traceback" not in proc.stderr
    # --force starts afresh
    proc = run_cli(["train", str(case), "--quiet", "--force"])
    assert proc.returncode == 0, proc.stderr


def test_pickled_code_in_a_checkpoint_is_not_run(tiny_case, tmp_path):
    import pickle

    case = _copy(tiny_case, tmp_path, members=1)
    ckpt = case / "results" / "train" / "checkpoints" / "member-0.pt"
    ckpt.parent.mkdir(parents=True)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"digest": Evil()}, ckpt, pickle_module=pickle)
    proc = run_cli(["train", str(case), "--quiet"])
    assert proc.returncode == 2
    assert not marker.exists()


def test_run_end_to_end_then_reuse(tiny_case, tmp_path):
    """`hybrid run` chains the stages; unchanged inputs redo nothing; a [surrogate] change
    redoes training onward but not the solve."""
    case = _copy(tiny_case, tmp_path)
    first = run_cli(["run", str(case), "--quiet"])
    assert first.returncode == 0, first.stderr
    for path in ("solve/dataset.h5", "train/member-1.pt", "train/history.png",
                 "predict/predictions.h5", "predict/metrics.json", "export/test-000.xdmf"):
        assert (case / "results" / path).exists(), path
    stamp = {p: (case / "results" / p).stat().st_mtime_ns
             for p in ("solve/dataset.h5", "train/member-0.pt")}
    again = run_cli(["run", str(case), "--quiet"])
    assert again.returncode == 0, again.stderr
    assert "solve: up to date" in again.stdout and "train: up to date" in again.stdout
    assert "predict: up to date" in again.stdout
    assert (case / "results/train/member-0.pt").stat().st_mtime_ns == stamp["train/member-0.pt"]
    text = (case / "case.toml").read_text().replace("width = 8", "width = 6")
    (case / "case.toml").write_text(text)
    changed = run_cli(["run", str(case), "--quiet"])
    assert changed.returncode == 0, changed.stderr
    assert "solve: up to date" in changed.stdout and "train: up to date" not in changed.stdout
    assert (case / "results/solve/dataset.h5").stat().st_mtime_ns == stamp["solve/dataset.h5"]
    assert (case / "results/train/member-0.pt").stat().st_mtime_ns != stamp["train/member-0.pt"]


def test_nearest_training_baseline_picks_the_closest_scenario():
    from hybrid.stages.predict import nearest_training_baseline

    rng = np.random.default_rng(0)
    # identical initial states
    train = {"params": rng.uniform(1, 5, (30, 1)), "u": np.zeros((30, 3, 10))}
    test = {"params": np.array([[1.0], [5.0], [3.3]]), "u": np.zeros((3, 3, 10))}
    got = nearest_training_baseline(train, test)
    want = np.argmin(np.abs(train["params"][:, 0][None] - test["params"][:, 0][:, None]), axis=1)
    np.testing.assert_array_equal(got, want)
    # differing initial states: the one with the right state wins over a closer parameter
    train = {"params": np.array([[1.0], [1.1]]), "u": np.stack([np.zeros((2, 4)), np.ones((2, 4))])}
    test = {"params": np.array([[1.02]]), "u": np.ones((1, 2, 4))}
    assert nearest_training_baseline(train, test)[0] == 1


def test_variance_heads_map_a_constant_log_variance_exactly():
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.shapes import generate
    from hybrid.surrogates.data import Normaliser, to_mesh_variances
    from hybrid.surrogates.transfer import Transfer

    mesh = generate({"shape": "rectangle", "h": 0.2}, seed=0)
    cv = build_control_volumes(mesh, "dual")
    transfer = Transfer.build(mesh, cv, (17, 17))
    T, d = 3, 2
    norm = Normaliser(np.zeros(1), np.ones(1), 0.0, 1.0, 2.0, 3.0)
    output = torch.zeros(1, 2 * (T + T * d), 17, 17, dtype=torch.float64)
    output[:, T + T * d:] = 0.4                       # log-variance 0.4 everywhere
    var_u, var_phi = to_mesh_variances(transfer, output, norm, T, torch.as_tensor(cv.face_normal))
    # the transfer reproduces constants; unit normals: Σ n_k² = 1
    np.testing.assert_allclose(var_u.numpy(), np.exp(0.4) * 4.0, rtol=1e-12)
    np.testing.assert_allclose(var_phi.numpy(), np.exp(0.4) * 9.0, rtol=1e-12)


def test_heteroscedastic_members_add_their_own_variance(tiny_case, tmp_path):
    from helpers import edit_toml

    case = _copy(tiny_case, tmp_path)
    toml = case / "case.toml"
    toml.write_text(edit_toml(toml.read_text(), "surrogate", "heteroscedastic", "true"))
    proc = run_cli(["predict", str(case), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    with h5py.File(case / "results" / "predict" / "predictions.h5", "r") as f:
        u_var, u_dev = f["u_var"][()], f["u_dev"][()]
        flux_var, flux_dev = f["flux_var"][()], f["flux_dev"][()]
    spread = (u_dev ** 2).sum(axis=1) / (u_dev.shape[1] - 1)
    # the mixture's variance: the members' spread plus their heads' (positive) variances
    assert (u_var[:, 1:] > spread[:, 1:]).all()
    assert (flux_var > (flux_dev ** 2).sum(axis=1) / (flux_dev.shape[1] - 1)).all()
    member = torch.load(case / "results" / "train" / "member-0.pt", weights_only=True)
    assert member["config"]["heteroscedastic"] and member["config"]["variance_channels"] == 4 + 4


@pytest.mark.parametrize("kind, params", [("constant", {"k": 0.3}), ("power", {"m": 2.5}),
                                          ("stefan", {"u_star": 0.5, "k_max": 1.0, "k_min": 0.1,
                                                      "smoothing": 0.05}),
                                          ("stefan", {"u_star": 0.5, "k_max": 2.0, "k_min": 0.0,
                                                      "smoothing": 0.0})])
def test_softc_conductivity_is_the_solvers(kind, params):
    """SoftC's k(u) in torch is the solver's k(u) in numpy, the sharp Stefan step included."""
    import torch

    from hybrid.solvers.gpme import Conductivity
    from hybrid.surrogates.softc import conductivity_torch

    u = np.concatenate([np.linspace(-0.5, 1.5, 401), [0.5, 0.45, 0.55]])
    expected = Conductivity(kind, **params)(u)[0]
    got = conductivity_torch(kind,
                             {k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()})(
        torch.as_tensor(u))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14)



def test_a_rollout_of_a_zero_step_keeps_the_initial_state_and_sees_the_time():
    """hybrid/surrogates/rollout.py: a network whose outputs are 0 steps nowhere, so every
    rolled-out state is the initial one and every flux 0; each step's input carries the
    state it starts from (as the one-shot input carries u0) and t_n / t_T in its last channel."""
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.shapes import generate
    from hybrid.surrogates.data import Normaliser, build_inputs
    from hybrid.surrogates.rollout import rollout, step_inputs
    from hybrid.surrogates.transfer import Transfer

    mesh = generate({"shape": "interval", "cells": 30, "jitter": 0.2}, seed=3)
    cv = build_control_volumes(mesh, "dual")
    transfer = Transfer.build(mesh, cv, (24,))
    rng = np.random.default_rng(0)
    u0 = rng.normal(size=(3, cv.num_cvs))
    params = rng.normal(size=(3, 2))
    norm = Normaliser(np.zeros(2), np.ones(2), 0.3, 2.0, 0.5, 1.5)
    static = build_inputs(transfer, u0, params, norm).grid_inputs
    times = np.array([0.0, 0.1, 0.25, 0.4])
    seen = []

    def zero_step(x):
        seen.append(x.clone())
        return torch.zeros(x.shape[0], 2, *x.shape[2:])

    states, fluxes = rollout(zero_step, transfer, static, torch.as_tensor(u0), times, norm,
                             torch.as_tensor(cv.face_normal), 1)
    assert states.shape == (3, 3, cv.num_cvs) and fluxes.shape == (3, 3, cv.num_faces)
    np.testing.assert_array_equal(states.numpy(), np.repeat(u0[:, None], 3, axis=1))
    assert not fluxes.any()
    assert len(seen) == 3 and seen[0].shape[1] == static.shape[1] + 1
    for n, x in enumerate(seen):
        np.testing.assert_allclose(x[:, -1].numpy(), times[n] / times[-1], rtol=1e-6)
        # the same state at every step: the same input
        torch.testing.assert_close(x[:, :-1], static)
    shifted = step_inputs(transfer, torch.as_tensor(u0 + 1.0), static, torch.zeros(3), 0.4, norm, 1)
    np.testing.assert_allclose((shifted[:, 0] - static[:, 0]).numpy(), 1.0 / norm.u_std, rtol=1e-5)


def test_a_two_level_rollout_feeds_each_step_the_last_increment():
    """rollout_history = 2: a network that steps u_(n+1) = u_n + (its increment channel + 1)
    × du_std, i.e. a constant velocity growing by one increment per step, must see a zero
    increment at the first step and the increment it made itself at every later one, so the
    states follow u_n = u_0 + n (n + 1) / 2 × du_std exactly."""
    from hybrid.mesh.control_volumes import build_control_volumes
    from hybrid.mesh.shapes import generate
    from hybrid.surrogates.data import Normaliser, build_inputs
    from hybrid.surrogates.rollout import rollout
    from hybrid.surrogates.transfer import Transfer

    mesh = generate({"shape": "interval", "cells": 30, "jitter": 0.2}, seed=3)
    cv = build_control_volumes(mesh, "dual")
    transfer = Transfer.build(mesh, cv, (24,))
    rng = np.random.default_rng(1)
    u0 = rng.normal(size=(2, cv.num_cvs))
    norm = Normaliser(np.zeros(1), np.ones(1), 0.3, 2.0, 0.5, 1.5)
    static = build_inputs(transfer, u0, rng.normal(size=(2, 1)), norm).grid_inputs
    times = np.linspace(0.0, 1.0, 5)
    seen = []

    def accelerate(x):
        seen.append(x.clone())
        # channel 1 is the last increment / du_std (constant fields survive the transfers)
        return torch.cat([x[:, 1:2] + 1.0, torch.zeros_like(x[:, :1])], dim=1)

    states, _ = rollout(accelerate, transfer, static, torch.as_tensor(u0), times, norm,
                        torch.as_tensor(cv.face_normal), 1, history=2)
    assert seen[0].shape[1] == static.shape[1] + 2   # + the increment and the time
    assert not seen[0][:, 1].any()
    for n in range(1, 5):
        np.testing.assert_allclose(states[:, n - 1].numpy(),
                                   u0 + n * (n + 1) / 2 * norm.du_std, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(seen[n - 1][:, 1].numpy(), n - 1, atol=1e-4)


def test_autoregressive_members_predict_the_initial_state_exactly(tiny_case, tmp_path):
    """[surrogate] time = "autoregressive": members one step long, rolled out by predict; the
    initial state is given, the members differ, and their validation error is a rollout's
    (with the relative loss; the rank test takes the default scaled one)."""
    case = _copy(tiny_case, tmp_path)
    text = (case / "case.toml").read_text().replace(
        "layers = 2", 'layers = 2\ntime = "autoregressive"\nrollout_loss = "relative"')
    (case / "case.toml").write_text(text)
    proc = run_cli(["predict", str(case), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    state = torch.load(case / "results" / "train" / "member-0.pt", weights_only=True)
    # one state + one flux
    assert state["config"]["autoregressive"] and state["config"]["out_channels"] == 2
    softc = torch.load(case / "results" / "train" / "softc" / "member-0.pt", weights_only=True)
    assert not softc["config"]["autoregressive"]                 # the SoftC baseline stays one-shot
    with h5py.File(case / "results" / "predict" / "predictions.h5", "r") as f:
        u_mean, u_var = f["u_mean"][()], f["u_var"][()]
    with h5py.File(case / "results" / "solve" / "dataset.h5", "r") as f:
        truth = f["test/u"][()]
    assert u_mean.shape == truth.shape
    np.testing.assert_array_equal(u_mean[:, 0], truth[:, 0])
    assert (u_var[:, 1:] > 0).all() and np.isfinite(u_mean).all()


def test_parameters_left_out_of_the_inputs_are_not_seen(tiny_case, tmp_path):
    """[surrogate] parameter_inputs = []: k is no input channel (one channel fewer, the mask in
    the checkpoint), so test scenarios that differ only in k (every one starts from sin x) get
    the same prediction, where the solver's differ."""
    case = _copy(tiny_case, tmp_path)
    text = (case / "case.toml").read_text().replace("layers = 2",
                                                    "layers = 2\nparameter_inputs = []")
    (case / "case.toml").write_text(text)
    proc = run_cli(["predict", str(case), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    state = torch.load(case / "results" / "train" / "member-0.pt", weights_only=True)
    # initial state, coordinate, mask; with k: 4
    assert state["config"]["in_channels"] == 3
    assert not state["normaliser"]["param_inputs"].any()
    with h5py.File(case / "results" / "predict" / "predictions.h5", "r") as f:
        u_mean = f["u_mean"][()]
    with h5py.File(case / "results" / "solve" / "dataset.h5", "r") as f:
        truth, k = f["test/u"][()], f["test/params"][:, 0]
    assert np.ptp(k) > 1 and np.abs(truth[1:] - truth[0]).max() > 1e-2
    np.testing.assert_allclose(u_mean[1:], np.broadcast_to(u_mean[0], u_mean[1:].shape),
                               atol=1e-6)


def test_time_select_predicts_with_the_ensemble_the_validation_prefers(tiny_case, tmp_path):
    """[surrogate] time = "select" trains both ensembles and predicts with the one whose
    members' mean best validation relative L2 is lower; the choice and both scores are in
    predict's metrics and in the report."""
    import json

    case = _copy(tiny_case, tmp_path)
    text = (case / "case.toml").read_text().replace("layers = 2", 'layers = 2\ntime = "select"\n'
                                                                  'rollout_epochs = 3')
    (case / "case.toml").write_text(text)
    for command in ("predict", "run"):   # predict trains inside its own
                                         # stage; run finds it all current
        proc = run_cli([command, str(case)])
        assert proc.returncode == 0, proc.stderr
    assert "time = select:" in proc.stdout
    train = case / "results" / "train"
    assert not (train / "edge").exists()   # the test k = 1, 5 are inside the span: no probes
    scores = {}
    for time_, folder in (("one-shot", train), ("autoregressive", train / "autoregressive")):
        stage = json.loads((folder / "stage.json").read_text())
        scores[time_] = np.mean([m["best_validation_rel_l2"] for m in stage["members"].values()])
        epochs = {m["epochs"] for m in stage["members"].values()}
        # rollout_epochs for the stepping members
        assert epochs <= ({3} if time_ == "autoregressive" else {6})
    metrics = json.loads((case / "results" / "predict" / "metrics.json").read_text())
    assert metrics["surrogate_time"] == min(scores, key=scores.get)
    assert metrics["validation_rel_l2_by_time"] == pytest.approx(scores, rel=1e-12)
    assert ("chosen by the validation scenarios"
            in (case / "results" / "validate" / "report.md").read_text())
    seconds = sum(json.loads((folder / "stage.json").read_text())["training_seconds"]
                  for folder in (train, train / "autoregressive"))
    report = json.loads((case / "results" / "validate" / "metrics.json").read_text())
    # both ensembles' cost
    assert report["times"]["training_seconds"] == pytest.approx(seconds, rel=1e-12)


def test_time_select_weighs_in_edge_probes_where_the_test_leaves_the_span(tiny_case, tmp_path):
    """A test k = 7 beyond the training k ~ U[1, 5]: each kind also trains PROBE_MEMBERS
    members on the training scenarios inside a cut, scored on those beyond it
    (hybrid.surrogates.data.edge_split), and the choice compares (1 - w) × validation + w ×
    edge, w the fraction of test scenarios outside; recorded in predict's metrics and the
    report, and a second train finds every probe current."""
    import json

    from hybrid.case import load_case
    from hybrid.surrogates.data import edge_split
    from hybrid.surrogates.members import PROBE_MEMBERS

    case = _copy(tiny_case, tmp_path)
    text = (case / "case.toml").read_text().replace("layers = 2", 'layers = 2\ntime = "select"\n'
                                                                  'rollout_epochs = 3')
    text = text.replace("k = { choice = [1.0, 5.0] }", "k = { choice = [1.0, 7.0] }")
    (case / "case.toml").write_text(text)
    split = edge_split(load_case(case))
    assert split is not None and 0 < split.weight < 1
    params = np.array([s["k"] for s in load_case(case).scenarios("train")])
    assert params[split.edge].min() > params[split.fit].max()   # the edge is the top of the span
    proc = run_cli(["run", str(case)])
    assert proc.returncode == 0, proc.stderr
    assert "edge probes" in proc.stdout
    train = case / "results" / "train"
    mean = {}
    for kind, folder in (("one-shot", train), ("autoregressive", train / "autoregressive")):
        for key, stage_dir in ((kind, folder), (kind + " edge", folder / "edge")):
            members = json.loads((stage_dir / "stage.json").read_text())["members"]
            assert len(members) == (PROBE_MEMBERS if "edge" in key else 2)
            mean[key] = np.mean([m["best_validation_rel_l2"] for m in members.values()])
    metrics = json.loads((case / "results" / "predict" / "metrics.json").read_text())
    assert metrics["edge_weight"] == pytest.approx(split.weight)
    assert metrics["edge_rel_l2_by_time"] == pytest.approx(
        {k: mean[k + " edge"] for k in ("one-shot", "autoregressive")}, rel=1e-12)
    score = {k: (1 - split.weight) * mean[k] + split.weight * mean[k + " edge"]
             for k in ("one-shot", "autoregressive")}
    assert metrics["surrogate_time"] == min(score, key=score.get)
    assert "by edge probes" in (case / "results" / "validate" / "report.md").read_text()
    again = run_cli(["train", str(case)])
    assert again.returncode == 0 and "edge probe up to date" in again.stdout, again.stdout


def test_model_config_round_trips_through_a_checkpoint_dict():
    """hybrid/surrogates/config.py: what a checkpoint records rebuilds the same network; an
    older checkpoint's dict (no components, no boon_ends) reads with the defaults; a key this
    version does not know is refused rather than ignored."""
    from hybrid.surrogates.config import ModelConfig

    config = ModelConfig(in_channels=5, out_channels=12, dim=1, outputs=4, modes=6, width=8,
                         layers=2, padding=4, heteroscedastic=True, variance_channels=12,
                         boon_ends=("dirichlet", "neumann"))
    plain = config.to_dict()
    # weights_only-safe
    assert all(isinstance(v, (int, bool, list, type(None))) for v in plain.values())
    assert ModelConfig.from_dict(plain) == config
    old = {k: v for k, v in plain.items() if k not in ("components", "boon_ends")}
    assert ModelConfig.from_dict(old) == ModelConfig(**{**old, "components": 1, "boon_ends": None})
    from hybrid.surrogates.boon import BoonFNO
    assert (isinstance(config.build(), BoonFNO)
            and not isinstance(ModelConfig.from_dict(old).build(), BoonFNO))
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**plain, "kernel": 3})
