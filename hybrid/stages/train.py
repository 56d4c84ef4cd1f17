"""``hybrid train CASE``: a deep ensemble of FNO surrogates on the solver's dataset.

Members train independently, member m on rank m mod P, each single-threaded and seeded
from the case seed and m, so the ensemble does not depend on P. Every few epochs a
member writes a checkpoint (``OUTPUT/train/checkpoints/member-M.pt``); a run that was
interrupted resumes from it. The finished member (best validation weights, model
configuration, normalisation, loss history) is ``OUTPUT/train/member-M.pt``; rank 0
draws the loss curves in ``OUTPUT/train/history.png``.

The library it calls: :mod:`hybrid.surrogates.training_set` (what an ensemble trains on),
:mod:`hybrid.surrogates.members` (which ensembles a case trains, which one predicts, loading
them) and :mod:`hybrid.report.history` (the figure).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import torch
from mpi4py import MPI

from hybrid.case.sections import TRAIN_SECTIONS
from hybrid.errors import CaseError
from hybrid.files import commit_pending, commits_together, mark_stage_done, stage_is_current
from hybrid.parallel import ScenarioProgress, collective, my_indices, root_print
from hybrid.problems import problem_for
from hybrid.report.history import plot_history
from hybrid.stages.solve import read_dataset, run_solve
from hybrid.surrogates.data import EdgeSplit, split_indices
from hybrid.surrogates.ensemble import initial_states, state_targets
from hybrid.surrogates.members import (BaselineEnsemble, ChosenMembers, autoregressive,
                                       baseline_ensembles, check_time, choose_by_validation,
                                       chosen_members, edge_probes, ensemble_folders,
                                       load_members, main_penalty, mean_validation,
                                       PROBE_MEMBERS, selects_time, softc_weight, wants_softc)
from hybrid.surrogates.training import TrainingSet, save_state, train_member
from hybrid.surrogates.training_set import case_transfer, grid_shape, training_set

# run_train, and the library it calls re-exported under the names it had when it lived here
__all__ = ["TRAIN_SECTIONS", "run_train", "main_penalty", "autoregressive", "selects_time",
           "check_time", "chosen_members", "ChosenMembers", "case_transfer", "grid_shape",
           "load_members", "wants_softc", "softc_weight", "BaselineEnsemble", "baseline_ensembles",
           "initial_states", "state_targets", "split_indices", "ensemble_folders"]


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
    # (folder, digest, penalty, label, autoregressive, the baseline it is or None, the edge
    # split of a probe or None)
    flavours = [(out, digest, main, "", autoregressive(case), None, None)]
    if selects_time(case):
        flavours.append((out / "autoregressive", f"{digest}+autoregressive", main,
                         "autoregressive ", True, None, None))
        edge_split_, probes = edge_probes(case, out)
        flavours += [(folder, f"{digest}+{time_}+edge", main, f"{time_} edge probe ",
                      time_ == "autoregressive", None, edge_split_)
                     for time_, folder in probes.items()]
    flavours += [(out / b.variant, digest + b.suffix, b.penalty, b.label, False, b, None)
                 for b in baseline_ensembles(case)]
    prepared = None
    validation = {}   # the main ensembles' members, by time (what time = "select" compares)
    edge = {}         # the edge probes' members, by time
    trained = False
    for folder, stage_digest, penalty, label, stepping, baseline, split in flavours:
        M = PROBE_MEMBERS if split else int(case.surrogate["members"])
        files = [f"member-{m}.pt" for m in range(M)]
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
                                      comm, progress, stepping=stepping, baseline=baseline,
                                      split=split)
        if baseline is None:
            (edge if split else validation)["autoregressive" if stepping else "one-shot"] = members
    if selects_time(case) and comm.rank == 0 and (announce or trained):   # stage files commit
                                                                          # on return
        mean = lambda found: {k: mean_validation(v) for k, v in found.items()} or None
        chosen = choose_by_validation(out, digest, mean(validation), mean(edge),
                                      edge_split_.weight if edge else 0.0)
        root_print(f"train: {case.name}: time = select: {chosen.time} predicts "
                   f"({select_text(chosen)})", comm=comm)
    return out


def select_text(chosen: ChosenMembers) -> str:
    """What ``time = "select"`` compared: each kind's mean validation relative L2 and, where
    the test leaves the training span, its edge probes' and the weight of theirs."""
    text = "mean validation relative L2 " + ", ".join(f"{k} {v:.4f}"
                                                      for k, v in chosen.validation.items())
    if chosen.edge:
        text += ("; edge probes' relative L2 beyond the cut "
                 + ", ".join(f"{k} {v:.4f}" for k, v in chosen.edge.items())
                 + f", weighted {chosen.edge_weight:.2f} (the test scenarios outside the span)")
    return text


def _train_ensemble(case, out: Path, digest: str, penalty: float, label: str, prepared, force: bool,
                    comm: MPI.Comm, progress: bool, stepping: bool = False,
                    baseline: BaselineEnsemble | None = None, split: EdgeSplit | None = None
                    ) -> dict:
    """Train one ensemble's members over the ranks (``baseline``: which compared ensemble, None
    for the main one; ``split``: an edge probe's PROBE_MEMBERS members, fitted inside the cut
    and validated beyond it); every member's summary (epochs, best validation relative L2,
    ...), by member index, on every rank."""
    M = PROBE_MEMBERS if split else int(case.surrogate["members"])
    if force and comm.rank == 0 and (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints")
    comm.Barrier()
    data, cv, transfer = prepared
    tset = training_set(case, data, cv, transfer, penalty, bool(baseline and baseline.boon),
                        stepping, baseline is None or baseline.padded)
    if split is not None:
        tset = dataclasses.replace(tset, train_idx=split.fit, val_idx=split.edge)
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
                plot_history(out, M)
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
