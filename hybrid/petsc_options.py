"""PETSc options from the case: ``[solver] petsc_options`` and ``[constraints] petsc_options``.

The case gives options without their leading ``-`` and without a prefix, as DOLFINx's demos
pass ``petsc_options``: ``{ ksp_type = "gmres", pc_type = "hypre" }``. They are put in PETSc's
options database under a stable prefix (:data:`SOLVER_PREFIX` for the reference solvers'
Newton and linear solvers, :data:`UPDATE_PREFIX` for the constraint update's), so that the
same options can also be given on the command line or in ``PETSC_OPTIONS`` as
``-hybrid_solver_ksp_type gmres``; the case's take precedence, and are removed again when the
stage ends. Options PETSc does not know are ignored by PETSc, as on its command line.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator, Mapping

__all__ = ["SOLVER_PREFIX", "UPDATE_PREFIX", "petsc_options", "check_petsc_options", "set_default"]

SOLVER_PREFIX = "hybrid_solver_"
UPDATE_PREFIX = "hybrid_update_"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_petsc_options(options, where: str, error) -> dict[str, str]:
    """The table as option name -> text; ``error(key, message)`` builds the exception."""
    if not isinstance(options, Mapping):
        raise error(where, f"expected a table of PETSc option = value, found {options!r}")
    out = {}
    for name, value in options.items():
        if not _NAME.match(str(name)):
            raise error(f"{where}.{name}", "a PETSc option name: letters, digits and '_', without "
                                           "the leading '-' or a prefix (e.g. ksp_type)")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            text = str(value)
        else:
            raise error(f"{where}.{name}", f"expected a string, number or boolean, found {value!r}")
        out[str(name)] = text
    return out


@contextlib.contextmanager
def petsc_options(prefix: str, options: Mapping[str, str], *, key: str | None = None,
                  file: str | None = None) -> Iterator[None]:
    """PETSc's database holds ``-{prefix}{name} value`` for each option during the block;
    what was there before is restored afterwards. A PETSc error in the block (an unknown
    type, a solver that fails with these options) becomes a CaseError naming ``key``."""
    if not options:
        yield
        return
    from petsc4py import PETSc

    from hybrid.errors import CaseError

    database = PETSc.Options()
    before = {}
    for name, value in options.items():
        full = f"{prefix}{name}"
        before[full] = database.getString(full) if database.hasName(full) else None
        database[full] = value
    try:
        yield
    except PETSc.Error as error:
        said = [line.split("] ", 1)[-1] for line in str(error).splitlines() if line.strip()]
        raise CaseError(f"PETSc failed with these options: {said[-1] if said else error}",
                        file=file, key=key) from None
    finally:
        for full, value in before.items():
            if value is None:
                database.delValue(full)
            else:
                database[full] = value


def set_default(database, key: str, value: str) -> bool:
    """Put ``key`` in the database unless the user gave it; True when it was put (remove it
    later)."""
    if database.hasName(key):
        return False
    database[key] = value
    return True
