"""``hybrid train CASE``: a deep ensemble of FNO surrogates on the solver's dataset.

Members train independently, member m on rank m mod P, each single-threaded and seeded
from the case seed and m, so the ensemble does not depend on P. Every few epochs a
member writes a checkpoint (``OUTPUT/train/checkpoints/member-M.pt``); a run that was
interrupted resumes from it. The finished member (best validation weights, model
configuration, normalisation, loss history) is ``OUTPUT/train/member-M.pt``; rank 0
draws the loss curves in ``OUTPUT/train/history.png``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI

from hybrid.errors import CaseError
from hybrid.files import (atomic_path, commit_pending, commits_together, mark_stage_done,
                          stage_is_current)
from hybrid.parallel import ScenarioProgress, collective, my_indices, root_print
from hybrid.problems import problem_for
from hybrid.stages.solve import SOLVE_SECTIONS, periodic_pairs, read_dataset, run_solve
from hybrid.surrogates.config import ModelConfig
from hybrid.surrogates.data import Normaliser, build_inputs, split_indices
from hybrid.surrogates.ensemble import initial_states, state_targets
from hybrid.surrogates.training import TrainingSet, load_checkpoint, save_state, train_member
from hybrid.surrogates.transfer import Transfer

__all__ = ["TRAIN_SECTIONS", "run_train", "main_penalty", "autoregressive", "selects_time",
           "check_time", "chosen_members", "ChosenMembers", "case_transfer", "grid_shape",
           "load_members", "wants_softc", "softc_weight", "BaselineEnsemble", "baseline_ensembles",
           "initial_states", "state_targets", "split_indices", "ensemble_folders"]

TRAIN_SECTIONS = SOLVE_SECTIONS + ("surrogate",)
CHECKPOINT_EVERY = 5
# the SoftC baseline's penalty weight when [surrogate] softc_weight is 0: on stefan-1d's test
# scenarios weights 1 / 0.1 / 0.01 gave relative L2 0.167 / 0.106 / 0.099 against 0.114 without
# the penalty
SOFTC_DEFAULT_WEIGHT = 0.01


def wants_softc(case) -> bool:
    """The case compares against SoftC: a second ensemble, trained with the PDE-residual
    penalty, in ``OUTPUT/train/softc``."""
    return "softc" in case.constraints["compare"]


def softc_weight(case) -> float:
    """The SoftC ensemble's penalty weight: ``[surrogate] softc_weight``, or
    SOFTC_DEFAULT_WEIGHT where that is 0."""
    return float(case.surrogate["softc_weight"]) or SOFTC_DEFAULT_WEIGHT


@dataclass(frozen=True)
class BaselineEnsemble:
    """An ensemble a case compares against (a name of ``[constraints] compare``), trained
    beside the main one in ``OUTPUT/train/<variant>`` and scored unconstrained.

    Attributes:
        variant: its name in ``compare``, ``predictions.h5`` and ``variants.h5``.
        label: how the train stage's lines name it.
        suffix: its checkpoints' digest is the main ensemble's plus this.
        penalty: its PDE-residual penalty weight (SoftC).
        boon: BOON's boundary-corrected layers.
        padded: the zero padding of non-periodic grids (False: BOON's published FNO1d, which
            declares a padding and never applies it).
    """

    variant: str
    label: str
    suffix: str
    penalty: float = 0.0
    boon: bool = False
    padded: bool = True


def baseline_ensembles(case) -> list[BaselineEnsemble]:
    """The ensembles ``[constraints] compare`` asks for besides the main one: SoftC (the PDE
    residual as a penalty), BOON and the unpadded FNO, in that order."""
    compare = case.constraints["compare"]
    out = []
    if wants_softc(case):
        out.append(BaselineEnsemble("softc", "SoftC ", f"+softc{softc_weight(case):g}",
                                    penalty=softc_weight(case)))
    if "boon" in compare:
        out.append(BaselineEnsemble("boon", "BOON ", "+boon", boon=True))
    if "unpadded" in compare:
        out.append(BaselineEnsemble("unpadded", "unpadded FNO ", "+unpadded", padded=False))
    return out


def main_penalty(case) -> float:
    """The main ensemble's residual-penalty weight: ``softc_weight``, unless SoftC is its own
    variant (then the SoftC ensemble has it and the main one none)."""
    return 0.0 if wants_softc(case) else float(case.surrogate["softc_weight"])


def autoregressive(case) -> bool:
    """The main ensemble steps t_n → t_{n+1} (``[surrogate] time = "autoregressive"``)."""
    return case.surrogate["time"] == "autoregressive"


def selects_time(case) -> bool:
    """``[surrogate] time = "select"``: a one-shot and an autoregressive ensemble are both
    trained, and the one with the lower validation error predicts (:func:`chosen_members`)."""
    return case.surrogate["time"] == "select"


def check_time(case) -> None:
    """An autoregressive ensemble has no per-output variance heads and no residual penalty
    (both are built for one-shot outputs): refused with the key that asks for one. The SoftC
    and BOON ensembles a case compares against stay one-shot, as their papers built them."""
    if not (autoregressive(case) or selects_time(case)):
        return
    for key, clash, what in (("surrogate.heteroscedastic", case.surrogate["heteroscedastic"],
                              "heteroscedastic heads"),
                             ("surrogate.softc_weight", main_penalty(case) > 0,
                              "a PDE-residual penalty")):
        if clash:
            raise CaseError(f'{what} need one-shot members, but [surrogate] time = '
                            f'"{case.surrogate["time"]}"',
                            file=str(case.display_file), key=key)


@dataclass(frozen=True)
class ChosenMembers:
    """The ensemble that predicts: its folder, its checkpoints' digest, how it treats time,
    and (``time = "select"``) the mean validation relative L2 of each candidate."""

    folder: Path
    digest: str
    time: str
    validation: dict | None = None


def chosen_members(case, train_dir: Path) -> ChosenMembers:
    """The main ensemble of a trained case. Under ``time = "select"`` the one-shot (in
    ``train/``) or the autoregressive one (``train/autoregressive/``), whichever has the lower
    mean over its members of the best validation relative L2 (validation scenarios only; a tie
    keeps one-shot)."""
    digest = case.hash(*TRAIN_SECTIONS)
    if not selects_time(case):
        return ChosenMembers(train_dir, digest, case.surrogate["time"])
    scores = {time_: _mean_validation(json.loads((folder / "stage.json").read_text())["members"])
              for time_, folder in (("one-shot", train_dir),
                                    ("autoregressive", train_dir / "autoregressive"))}
    return _choice(train_dir, digest, scores)


def _mean_validation(members: dict) -> float:
    return float(np.mean([m["best_validation_rel_l2"] for m in members.values()]))


def _choice(train_dir: Path, digest: str, scores: dict) -> ChosenMembers:
    if scores["autoregressive"] < scores["one-shot"]:
        return ChosenMembers(train_dir / "autoregressive", f"{digest}+autoregressive",
                             "autoregressive", scores)
    return ChosenMembers(train_dir, digest, "one-shot", scores)


def ensemble_folders(case, train_dir: Path) -> list[Path]:
    """Every ensemble's folder the train stage writes for this case, in its order: the main
    one, the autoregressive one under ``time = "select"``, then the compared ensembles'."""
    return ([train_dir] + ([train_dir / "autoregressive"] if selects_time(case) else [])
            + [train_dir / b.variant for b in baseline_ensembles(case)])


def grid_shape(case, dim: int) -> tuple[int, ...]:
    """The surrogate grid's nodes per axis for a ``dim``-D mesh: ``[surrogate] grid``, one size
    for every axis or one per axis. Raises CaseError when the sizes do not match ``dim`` or the
    grid cannot resolve ``[surrogate] modes``."""
    grid = case.surrogate["grid"]
    shape = tuple(grid) if isinstance(grid, (list, tuple)) else (int(grid),) * dim
    if len(shape) != dim:
        raise CaseError(f"grid has {len(shape)} sizes for a {dim}-D mesh",
                        file=str(case.display_file), key="surrogate.grid")
    modes = case.surrogate["modes"]
    if modes > min(shape) // 2 + 1:
        raise CaseError(f"modes = {modes} is more than the grid resolves (at most "
                        f"{min(shape) // 2 + 1} for grid {list(shape)})",
                        file=str(case.display_file), key="surrogate.modes")
    return shape


def case_transfer(case, data: dict):
    """Control volumes and the mesh↔grid transfer for the dataset's mesh."""
    mesh, cv = data.mesh, data.cv   # the control volumes the solver balanced, read back
    return cv, Transfer.build(mesh, cv, grid_shape(case, mesh.gdim))


def _training_set(case, data: dict, cv, transfer, penalty: float, boon: bool = False,
                  stepping: bool = False, padded: bool = True) -> TrainingSet:
    """What every member of one ensemble trains on; ``stepping``: autoregressive members;
    ``padded`` False: no zero padding whatever the grid's boundaries (the unpadded baseline)."""
    data = problem_for(case).view(data)
    train = data.train
    S, T1 = train.u.shape[:2]
    if S < 2:
        raise CaseError("training needs at least 2 training scenarios",
                        file=str(case.display_file), key="data.train")
    params = train.params
    u, phi, u0, C = state_targets(train, cv, data.times)
    norm = Normaliser.fit(params, u, phi, steps=stepping)
    inputs = build_inputs(transfer, u0, params, norm)
    ends = None
    if boon:
        from hybrid.surrogates.boon import model_ends, with_boundary_channels
        inputs, ends = with_boundary_channels(case, cv, transfer, inputs, params,
                                              train.parameter_names, data.times, norm)
    train_idx, val_idx = split_indices(case, S)
    s = case.surrogate
    T, d = T1 - 1, cv.dim
    padding = (0 if not padded or _fully_periodic(case, data.mesh) or ends is not None
               else max(2, max(transfer.grid.shape) // 8))
    config = ModelConfig(in_channels=int(inputs.grid_inputs.shape[1]) + stepping,
                         out_channels=(C + d) if stepping else T * C + T * d, dim=d, outputs=T,
                         modes=int(s["modes"]), width=int(s["width"]), layers=int(s["layers"]),
                         padding=padding, heteroscedastic=bool(s["heteroscedastic"]),
                         variance_channels=(T * C + T * d) if s["heteroscedastic"] else 0,
                         components=C,
                         boon_ends=None if ends is None else tuple(model_ends(ends)),
                         autoregressive=stepping)
    residual = None
    if penalty > 0:
        from hybrid.surrogates.softc import gpme_residual_penalty
        residual = gpme_residual_penalty(case, transfer, inputs, norm, data.times, params,
                                         train.parameter_names)
    return TrainingSet(transfer, inputs, torch.as_tensor(u[:, 1:]), torch.as_tensor(phi),
                       torch.as_tensor(np.tile(cv.volume, C)), torch.as_tensor(cv.face_area),
                       torch.as_tensor(cv.face_normal),
                       norm, train_idx, val_idx, config,
                       {"epochs": int((stepping and s["rollout_epochs"]) or s["epochs"]),
                        "lr": float(s["lr"]), "batch": int(s["batch"]),
                        "patience": int(s["patience"]), "softc_weight": float(penalty),
                        "checkpoint_every": CHECKPOINT_EVERY,
                        "rollout_noise": float(s["rollout_noise"])},
                        residual, data.times)


def _fully_periodic(case, mesh) -> bool:
    """Every boundary of the mesh is periodic: the FFT's own periodicity is then right, so
    the spectral layers get no zero padding."""
    periodic = {name for pair in periodic_pairs(case) for name in pair}
    return bool(periodic) and set(mesh.boundary_names) <= periodic


@commits_together
def run_train(case, *, force: bool = False, comm: MPI.Comm = MPI.COMM_WORLD,
              progress: bool = True, announce: bool = True) -> Path:
    """Train every member (collective), and the SoftC ensemble when the case compares
    against it; returns the train directory."""
    problem_for(case).check(case)
    check_time(case)
    dataset = run_solve(case, comm=comm, progress=progress, announce=False)
    out = Path(case.output_dir) / "train"
    digest = case.hash(*TRAIN_SECTIONS)
    main = main_penalty(case)
    # (folder, digest, penalty, label, autoregressive, the baseline it is or None)
    flavours = [(out, digest, main, "", autoregressive(case), None)]
    if selects_time(case):
        flavours.append((out / "autoregressive", f"{digest}+autoregressive", main,
                         "autoregressive ", True, None))
    flavours += [(out / b.variant, digest + b.suffix, b.penalty, b.label, False, b)
                 for b in baseline_ensembles(case)]
    M = int(case.surrogate["members"])
    files = [f"member-{m}.pt" for m in range(M)]
    prepared = None
    validation = {}   # the main ensembles' members, by time (what time = "select" compares)
    trained = False
    for folder, stage_digest, penalty, label, stepping, baseline in flavours:
        if not force and stage_is_current(folder, stage_digest, files, [dataset.parent]):
            if announce:
                root_print(f"train: {label}up to date ({folder}); --force redoes it", comm=comm)
            members = (json.loads((folder / "stage.json").read_text())["members"]
                       if comm.rank == 0 else None)
        else:
            trained = trained or baseline is None
            if prepared is None:
                data = read_dataset(dataset)
                prepared = (data, *case_transfer(case, data))
            members = _train_ensemble(case, folder, stage_digest, penalty, label, prepared, force,
                                      comm, progress, stepping=stepping, baseline=baseline)
        if baseline is None:
            validation["autoregressive" if stepping else "one-shot"] = members
    if selects_time(case) and comm.rank == 0 and (announce or trained):   # stage files commit
                                                                          # on return
        chosen = _choice(out, case.hash(*TRAIN_SECTIONS),
                         {k: _mean_validation(v) for k, v in validation.items()})
        root_print(f"train: {case.name}: time = select: {chosen.time} predicts (mean validation "
                   "relative L2 "
                   + ", ".join(f"{k} {v:.4f}" for k, v in chosen.validation.items()) + ")",
                   comm=comm)
    return out


def _train_ensemble(case, out: Path, digest: str, penalty: float, label: str, prepared, force: bool,
                    comm: MPI.Comm, progress: bool, stepping: bool = False,
                    baseline: BaselineEnsemble | None = None) -> dict:
    """Train one ensemble's members over the ranks (``baseline``: which compared ensemble, None
    for the main one); every member's summary (epochs, best validation relative L2, ...), by
    member index, on every rank."""
    M = int(case.surrogate["members"])
    if force and comm.rank == 0 and (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints")
    comm.Barrier()
    data, cv, transfer = prepared
    tset = _training_set(case, data, cv, transfer, penalty, bool(baseline and baseline.boon),
                         stepping, baseline is None or baseline.padded)
    epochs = tset.settings["epochs"]
    root_print(f"train: {case.name}: {label}{M} members x up to {epochs} epochs, "
               f"grid {list(transfer.grid.shape)}, {len(tset.train_idx)} training / "
               f"{len(tset.val_idx)} validation scenarios, on {comm.size} rank(s)"
               + (", autoregressive (one step a sample)" if tset.model_config.autoregressive
                  else "")
               + (f", PDE-residual penalty weight {penalty:g}" if penalty > 0 else ""),
               comm=comm)
    if not label:
        _warn_if_the_grid_is_coarse(transfer, tset, comm)
    # a checkpoint resumes only on the data it was trained on: a re-solve that changed the
    # dataset starts the members again
    solve_stamp = json.loads((Path(case.output_dir) / "solve" / "stage.json").read_text())
    resume_digest = f"{digest}+data{solve_stamp['outputs'].get('dataset.h5', '')[:16]}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a member's arithmetic must not depend on the thread count, hence
                              # on P
    summaries = {}
    comm.Barrier()
    loop_start = time.perf_counter()
    try:
        with ScenarioProgress(comm, M * epochs, "train", enabled=progress,
                              unit="epoch") as bar, collective(comm):
            for m in my_indices(M, comm):
                def on_epoch(done, train_loss, val, m=m):
                    bar.done()
                    bar.postfix(member=m, epoch=done, loss=f"{train_loss:.3g}", val=f"{val:.3g}")
                ckpt = out / "checkpoints" / f"member-{m}.pt"
                member_start = time.perf_counter()
                result, best = train_member(tset, m, case.seed, resume_digest, ckpt, on_epoch)
                member_seconds = time.perf_counter() - member_start
                # epochs done before a resume, and those early stopping skipped
                bar.done(result.resumed_from + epochs - result.epochs_run)
                save_state(out / f"member-{m}.pt",   # in place once every member is known good
                           {"digest": digest, "member": m, "model": best,
                            "config": tset.model_config.to_dict(),
                            "normaliser": tset.norm.to_state(),
                            "history": torch.tensor(result.history, dtype=torch.float64)})
                summaries[m] = {"epochs": result.epochs_run,
                                "best_validation_rel_l2": result.best_val,
                                "resumed_from_epoch": result.resumed_from,
                                "seconds_per_epoch": member_seconds / max(result.epochs_run
                                                                          - result.resumed_from, 1)}
    finally:
        torch.set_num_threads(threads)
    loop_seconds = time.perf_counter() - loop_start  # after the collective close: the slowest rank
    gathered = comm.allgather(summaries)
    allsum = {k: v for part in gathered for k, v in part.items()}
    diverged = sorted(m for m, s in allsum.items()
                      if not math.isfinite(s["best_validation_rel_l2"]))
    if diverged:   # every rank raises: no stage.json, and the members of the last good training
                   # stay
        raise CaseError(f"{label}member(s) {', '.join(map(str, diverged))} diverged: no epoch "
                        f"gave a finite validation error (lr = {case.surrogate['lr']:g}); "
                        "lower the learning rate",
                        file=str(case.display_file), key="surrogate.lr")
    with collective(comm):   # this training's members replace the last ones together, before
                             # rank 0 hashes them
        commit_pending()
    with collective(comm):
        if comm.rank == 0:
            for m in sorted(allsum):
                s = allsum[m]
                resumed = (f", resumed at epoch {s['resumed_from_epoch']}"
                           if s["resumed_from_epoch"] else "")
                root_print(f"train: {label}member {m}: {s['epochs']} epochs, best validation "
                           f"relative L2 {s['best_validation_rel_l2']:.4f}{resumed}", comm=comm)
            if case.output["figures"]:
                _plot_history(out, M)
            mark_stage_done(out, digest, [f"member-{m}.pt" for m in range(M)],
                            [Path(case.output_dir) / "solve"],
                            members={str(k): v for k, v in allsum.items()}, ranks=comm.size,
                            training_seconds=loop_seconds)
    return allsum


FLOOR_WARNING = 0.01   # relative L2 of the best grid fit of the training states above which train
                       # warns


def _warn_if_the_grid_is_coarse(transfer, tset: TrainingSet, comm: MPI.Comm) -> None:
    """Warn when the grid has more control-volume centres than nodes somewhere
    (:meth:`~hybrid.surrogates.transfer.Transfer.crowding`) and, for that reason, the best grid
    fit of the training states' last increments misses them by more than FLOOR_WARNING."""
    if comm.rank != 0:   # every rank holds the same transfer and states: one measures
        return
    centres, nodes = transfer.crowding()
    if centres <= nodes:
        return
    u = tset.u[:8, -1].numpy() - tset.inputs.u0[:8].numpy()
    N = transfer.num_cvs
    floor = transfer.fit_floor(u.reshape(-1, N), tset.volume[:N].numpy())
    if floor > FLOOR_WARNING:
        root_print(f"train: warning: grid {list(transfer.grid.shape)} is coarser than the mesh "
                   f"({centres} control-volume centres between {nodes} grid nodes): the best grid "
                   f"fit of the training states misses them by {floor:.3f} relative L2, a floor "
                   "for the surrogate's error; raise [surrogate] grid",
                   comm=comm)


def _plot_history(out: Path, M: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m in range(M):
        path = out / f"member-{m}.pt"
        hist = torch.load(path, map_location="cpu", weights_only=True)["history"].numpy()
        if len(hist):
            ax.semilogy(np.arange(1, len(hist) + 1), hist[:, 0], color=f"C{m}", lw=1,
                        label=f"member {m} train loss")
            ax.semilogy(np.arange(1, len(hist) + 1), hist[:, 1], color=f"C{m}", lw=1, ls="--")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss: squared rel. error (solid)\nvalidation rel. L2 (dashed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "history.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def load_members(out: Path, M: int, members: list[int], digest: str | None = None) -> dict:
    """Load finished members safely (weights_only); each rebuilds the network its checkpoint
    records (:class:`~hybrid.surrogates.config.ModelConfig`); a mismatched file is a clear error."""
    loaded = {}
    for m in members:
        path = out / f"member-{m}.pt"
        state = load_checkpoint(path)
        if digest is not None and state.get("digest") != digest:
            raise CaseError(f"{path} was trained for other case settings; run hybrid train --force")
        try:
            config = ModelConfig.from_dict(state["config"])
        except (TypeError, ValueError) as exc:
            raise CaseError(f"{path}: {exc}; run hybrid train --force") from None
        model = config.build()
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CaseError(f"{path} does not match the model configuration: {exc}") from None
        model.eval()
        loaded[m] = (model, config, Normaliser.from_state(state["normaliser"]))
    return loaded

