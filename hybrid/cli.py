"""The ``hybrid`` command: a thin layer over the stages.

    mpirun -n 4 hybrid run cases/stefan-1d
    hybrid solve|export CASE [--force]
    hybrid keys                      # every case.toml key with its default

Every mistake in the input is one message on stderr (rank 0), no traceback, exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from hybrid.errors import EXIT_BAD_INPUT, CaseError

__all__ = ["main"]

_PLANNED = {
    "validate": "the validation report is not built yet",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid", description="Physics-constrained hybrid simulator.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def stage(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("case", metavar="CASE", help="case directory (holding case.toml) or the case.toml itself")
        sp.add_argument("--force", action="store_true", help="redo the stage even if its inputs did not change")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        return sp

    stage("run", "all stages available so far: solve -> train -> predict -> export")
    stage("solve", "run the reference solver on every train and test scenario")
    stage("train", "train the ensemble of FNO surrogates on the solver's training scenarios")
    stage("predict", "ensemble predictions (mean, variance, member deviations) for every test scenario")
    ex = stage("export", "write XDMF time series of the solver's fields for ParaView")
    ex.add_argument("--train", action="store_true", help="also export the training scenarios")
    for name, why in _PLANNED.items():
        stage(name, f"(not available yet: {why})")
    sub.add_parser("keys", help="print every case.toml key with its type, default and meaning")
    return p


def _run(args) -> int:
    if args.command == "keys":
        from hybrid.case import describe_keys
        print(describe_keys())
        return 0
    from mpi4py import MPI

    from hybrid.case import load_case

    comm = MPI.COMM_WORLD
    if args.command in _PLANNED:
        if comm.rank == 0:
            print(f"hybrid {args.command}: {_PLANNED[args.command]} in this version; "
                  f"available: solve, train, predict, export, run", file=sys.stderr)
        return 1
    case = load_case(args.case)
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
    elif args.command in ("export", "run"):
        from hybrid.stages.export import run_export
        from hybrid.stages.predict import run_predict
        from hybrid.stages.solve import run_solve
        from hybrid.stages.train import run_train
        if args.command == "run":
            run_solve(case, force=args.force, comm=comm, progress=progress)
            run_train(case, force=args.force, comm=comm, progress=progress)
            run_predict(case, force=args.force, comm=comm, progress=progress)
        files = run_export(case, force=args.force, train=getattr(args, "train", False), comm=comm,
                           progress=progress)
        if args.command == "run" and comm.rank == 0:
            out = case.output_dir
            print(f"\nhybrid run {case.name}: done.\n  dataset   {out / 'solve' / 'dataset.h5'}\n"
                  f"  surrogate {out / 'train'} (loss curves: history.png)\n"
                  f"  predicted {out / 'predict' / 'predictions.h5'} (scores: metrics.json)\n"
                  f"  ParaView  {len(files)} series in {out / 'export'} (e.g. paraview {files[0] if files else ''})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)  # FFCx/DOLFINx JIT chatter
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
    try:
        return _run(args)
    except CaseError as exc:
        if rank == 0:
            print(f"hybrid: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if rank == 0:
            print("hybrid: interrupted; finished files are intact, unfinished ones were not written", file=sys.stderr)
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
