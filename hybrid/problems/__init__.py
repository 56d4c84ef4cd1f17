"""Problem families as plug-ins: what each stage asks of the family it runs
(:class:`~hybrid.problems.base.Problem`)."""

from hybrid.problems.base import Problem

__all__ = ["Problem", "problem_for"]


def problem_for(case) -> Problem:
    """The case's family: navier-stokes, or the scalar families (gpme, burgers, wave)."""
    if case.pde["family"] == "navier-stokes":
        from hybrid.problems.flow import FlowProblem
        return FlowProblem()
    from hybrid.problems.scalar import ScalarProblem
    return ScalarProblem()
