"""The ``hybrid`` command: a thin layer over the stages.

    mpirun -n 4 hybrid run cases/stefan-1d     # solve -> train -> predict -> validate -> export
    hybrid solve|train|predict|validate|export CASE [--force] [--quiet]
    hybrid constrain CASE --prediction FILE --name NAME    # any model's prediction, made exact
    hybrid keys                                # every case.toml key with its default

Every mistake in the input is one message on stderr (rank 0), no traceback, exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from hybrid.errors import (EXIT_BAD_INPUT, EXIT_GRACE_SECONDS, CaseError, WriteError,
                           catch_interrupts, is_write_failure)

__all__ = ["main"]



def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid", description="Physics-constrained hybrid simulator.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def stage(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("case", metavar="CASE",
                        help="case directory (holding case.toml) or the case.toml itself")
        sp.add_argument("--force", action="store_true",
                        help="redo the stage even if its inputs did not change")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        return sp

    stage("run", "every stage: solve -> train -> predict (with constraints) -> validate -> export")
    stage("solve", "run the reference solver on every train and test scenario")
    stage("train", "train the ensemble of FNO surrogates on the solver's training scenarios")
    stage("predict", "ensemble predictions (mean, variance, member deviations) for every test "
                     "scenario, and every constraint variant the case asks for")
    stage("validate", "score every variant against the solver: report.md, metrics.json and figures")
    ex = stage("export", "write XDMF time series for ParaView: the solver's fields and every "
                         "constraint variant's mean, std, absolute error and balance residual")
    ex.add_argument("--train", action="store_true", help="also export the training scenarios")
    ex.add_argument("--solver-only", action="store_true",
                    help="export the solver's fields only (u, balance_residual): no training or "
                         "prediction")
    ex.add_argument("--format", choices=("xdmf", "vtu"), default="xdmf",
                    help="xdmf: NAME.xdmf + NAME.h5 (default); vtu: NAME.pvd + NAME/step-IIII.vtu, "
                         "for readers without XDMF")
    con = stage("constrain", "make any model's prediction of the test scenarios exact: per-cell "
                             "conservation and boundary conditions (results/external/NAME/: "
                             "variants, report, ParaView series)")
    con.add_argument("--prediction", required=True, metavar="FILE",
                     help="HDF5 with u_mean, u_var (S, T+1, N); optional flux_mean, flux_var (S, "
                          "T, F), u_dev, flux_dev (S, M, ...)")
    con.add_argument("--name", required=True, help="the folder under results/external/")
    sub.add_parser("keys", help="print every case.toml key with its type, default and meaning")
    return p


def check_output_dir(case) -> None:
    """The output directory can be created and written, checked before any work (a file in the
    way, or no permission, found after the whole solve would waste it); nothing is created."""
    import tempfile

    out = Path(case.output_dir)
    probe = out
    while not probe.exists() and probe != probe.parent:   # the nearest folder that exists
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, f"{probe} is a file, not a directory")
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".hybrid-write-test-"):
            pass
    except OSError as exc:
        raise CaseError(f"{out} cannot be written: {exc.strerror or exc}",
                        file=str(case.display_file), key="output.dir") from None


def check_trainable(case, args) -> None:
    """A command that trains (or needs the surrogate) refuses a case it could not train, before
    the solve: one training scenario leaves none to validate on."""
    trains = args.command in ("run", "train", "predict", "validate") or (
        args.command == "export" and not getattr(args, "solver_only", False))
    if trains and int(case.data["train"]) < 2:
        raise CaseError("training needs at least 2 training scenarios (found "
                        f"{case.data['train']}): one is "
                        "held out to validate on; hybrid solve alone works with 1",
                        file=str(case.display_file), key="data.train")


def _run(args) -> int:
    if args.command == "keys":
        from hybrid.case import describe_keys
        print(describe_keys())
        return 0
    from mpi4py import MPI

    from hybrid.case import load_case

    comm = MPI.COMM_WORLD
    global _exit_comm
    if comm.size > 1 and _exit_comm is None:
        _exit_comm = comm.Dup()   # for the exit handshake alone: it matches no stage's collective
    case = load_case(args.case)
    check_output_dir(case)
    check_trainable(case, args)
    progress = not args.quiet
    if args.command == "solve":
        from hybrid.stages.solve import run_solve
        run_solve(case, force=args.force, comm=comm, progress=progress)
    elif args.command == "train":
        from hybrid.stages.train import run_train
        run_train(case, force=args.force, comm=comm, progress=progress)
    elif args.command == "predict":
        from hybrid.stages.predict import run_predict
        run_predict(case, force=args.force, comm=comm, progress=progress)
    elif args.command == "validate":
        from hybrid.stages.validate import run_validate
        run_validate(case, force=args.force, comm=comm, progress=progress)
    elif args.command == "constrain":
        from hybrid.stages.external import run_constrain
        out = run_constrain(case, args.prediction, args.name, force=args.force, comm=comm,
                            progress=progress)
        if comm.rank == 0:
            print(f"constrain: wrote {out} (report.md, metrics.json, variants.h5, export/)")
    elif args.command in ("export", "run"):
        from hybrid.stages.export import run_export
        from hybrid.stages.predict import run_predict
        from hybrid.stages.solve import run_solve
        from hybrid.stages.train import run_train
        if args.command == "run":
            run_solve(case, force=args.force, comm=comm, progress=progress)
            run_train(case, force=args.force, comm=comm, progress=progress)
            run_predict(case, force=args.force, comm=comm, progress=progress)
            from hybrid.stages.validate import run_validate
            report = run_validate(case, force=args.force, comm=comm, progress=progress)
        files = run_export(case, force=args.force, train=getattr(args, "train", False),
                           solver_only=getattr(args, "solver_only", False), comm=comm,
                           progress=progress, fmt=getattr(args, "format", "xdmf"))
        if args.command == "run" and comm.rank == 0:
            print(_summary(case, report, files))
    return 0


def _summary(case, report, files) -> str:
    """The closing lines of ``hybrid run``: the headline numbers and where everything is."""
    import json

    out = case.output_dir
    lines = [f"\nhybrid run {case.name}: done."]
    try:
        m = json.loads((report.parent / "metrics.json").read_text())
        raw = m["variants"]["raw"]
        best = min(m["variants"], key=lambda k: m["variants"][k]["rel_l2"])
        t = m["times"]
        lines.append(f"  raw surrogate relative L2 {raw['rel_l2']:.4f}; best variant {best} "
                     f"{m['variants'][best]['rel_l2']:.4f}; surrogate "
                     f"{t['solver_over_surrogate']:.0f}x faster than the solver per scenario")
    except (OSError, KeyError, ValueError):
        pass
    lines += [f"  report    {report}  (tables, then figures)",
              f"  ParaView  {len(files)} series in {out / 'export'}"
              + (f"  (e.g. paraview {files[0]})" if files else ""),
              f"  data      {out / 'solve' / 'dataset.h5'}, {out / 'predict' / 'variants.h5'}",
              f"  surrogate {out / 'train'} (loss curves: history.png)"]
    return "\n".join(lines)


_exit_comm = None


def _every_rank_failed_too(grace: float = EXIT_GRACE_SECONDS) -> bool:
    """After a CaseError: whether every rank reaches the exit within ``grace`` seconds (it
    failed too: the usual case, errors the stages share with ``collective``). A rank that
    failed alone would leave the others waiting forever in a stage's next collective call."""
    if _exit_comm is None:
        return True
    request = _exit_comm.Ibarrier()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if request.Test():
            return True
        time.sleep(0.01)
    return False


def _exit_after_write_error() -> None:
    """Exit with code 2 now, skipping the libraries' exit handlers: HDF5 would try again to
    flush the file whose write failed, and crash (a segfault that PETSc turns into MPI_Abort)."""
    sys.stdout.flush()
    sys.stderr.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()
    os._exit(EXIT_BAD_INPUT)


def _quiet_after_write_failures(report) -> None:
    """HDF5 objects freed after a failed write report the same failure again, unraisably, from
    their destructors: those echoes are dropped (the WriteError itself is the message)."""
    if is_write_failure(report.exc_value) and "dealloc" in repr(report.object):
        return
    sys.__unraisablehook__(report)


def _echo_of_write_failure(kind, error, trace) -> None:
    """h5py's destructors also print a traceback of the failure through sys.excepthook: dropped
    too."""
    if is_write_failure(error) and trace is not None and "dealloc" in trace.tb_frame.f_code.co_name:
        return
    sys.__excepthook__(kind, error, trace)


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (``sys.argv[1:]`` when None) and return the exit code: 0,
    2 for a :class:`~hybrid.errors.CaseError` (its message on stderr), 130 for an interrupt,
    1 for any other error (its traceback; under MPI the job is aborted)."""
    args = _parser().parse_args(argv)
    catch_interrupts()
    sys.unraisablehook = _quiet_after_write_failures
    sys.excepthook = _echo_of_write_failure
    logging.getLogger().setLevel(logging.WARNING)  # FFCx/DOLFINx JIT chatter
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
    try:
        return _run(args)
    except CaseError as exc:
        if rank == 0:
            print(f"hybrid: error: {exc}", file=sys.stderr, flush=True)
        if not _every_rank_failed_too():   # this rank failed alone: say so, and end the job
            if rank != 0:
                print(f"hybrid: error (rank {rank}): {exc}", file=sys.stderr, flush=True)
            from mpi4py import MPI
            MPI.COMM_WORLD.Abort(EXIT_BAD_INPUT)
        if isinstance(exc, WriteError):
            _exit_after_write_error()
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if rank == 0:
            print("hybrid: interrupted; finished files are intact, unfinished ones were not "
                  "written", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - one rank failing must not leave the others waiting
        traceback.print_exc()
        size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
        if size > 1:
            from mpi4py import MPI
            MPI.COMM_WORLD.Abort(1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
