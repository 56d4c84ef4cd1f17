"""Convergence rates of the reference solver against closed-form solutions.

As in scikit-fem's convergence tests: refine the mesh, fit log(error) against log(h),
assert the slope from both sides (|rate − expected| < ε) and the finest error. Every run
also checks the per-control-volume balance at round-off.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import erf

from hybrid.mesh.control_volumes import build_control_volumes
from hybrid.mesh.shapes import generate
from hybrid.solvers.gpme import BoundaryData, Conductivity, GPMESolver


def constant(value):
    return lambda points, t=0.0, params=None: np.full(len(points), float(value))


def fitted_rate(h, errors) -> float:
    return float(np.polyfit(np.log(h), np.log(errors), 1)[0])


def assert_converges(h, errors, expected: float, within: float, finest: float) -> None:
    """Two-sided: the fitted rate is the scheme's, |rate − expected| < within (a rate far above
    it means the error was not in the asymptotic range, or the exact solution is wrong), and
    the finest mesh's error is below ``finest`` (a right rate at a wrong level still fails)."""
    rate = fitted_rate(h, errors)
    assert abs(rate - expected) < within, (rate, expected, errors)
    assert errors[-1] < finest, (errors[-1], finest)


def solve(cv, conductivity, boundaries, u0, t_end, dt, outputs, theta, **burgers):
    solver = GPMESolver(cv, conductivity, boundaries, {}, theta=theta, **burgers)
    try:
        traj = solver.run(u0, t_end, dt, outputs)
    finally:
        solver.close()
    scale = max(np.abs(traj.u).max(), 1e-300) * cv.volume.max()
    assert np.abs(cv.balance_residual(traj.u, traj.flux, traj.source)).max() <= 1e-12 * scale
    return traj


def l2(cv, values):
    return float(np.sqrt(np.sum(cv.volume * values ** 2)))


@pytest.mark.parametrize("kind", ["dual", "cells"])
def test_heat_1d_rate(kind):
    """u = exp(-k π² t) sin(π x) with u = 0 at both ends, on jittered intervals, Crank–Nicolson."""
    k, t_end = 0.5, 0.2
    exact = lambda x, t: np.exp(-k * np.pi ** 2 * t) * np.sin(np.pi * x[:, 0])
    hs, errors = [], []
    for n in (10, 20, 40, 80):
        cv = build_control_volumes(generate({"shape": "interval", "cells": n, "jitter": 0.3},
                                            seed=1), kind)
        zero = constant(0.0)
        traj = solve(cv, Conductivity("constant", k=k), [BoundaryData("left", "dirichlet", zero),
                     BoundaryData("right", "dirichlet", zero)], exact(cv.centre, 0), t_end,
                     t_end / n, 4, 0.5)
        hs.append(1 / n)
        errors.append(l2(cv, traj.u[-1] - exact(cv.centre, t_end)))
    assert_converges(hs, errors, 2.0, 0.1, 5e-5)


def test_heat_2d_rate():
    """u = exp(-2 k π² t) sin(π x) sin(π y) on unstructured triangles (dual control volumes)."""
    k, t_end = 0.2, 0.1
    exact = (lambda x, t: np.exp(-2 * k * np.pi ** 2 * t) * np.sin(np.pi * x[:, 0])
             * np.sin(np.pi * x[:, 1]))
    hs, errors = [], []
    for h in (0.1, 0.05, 0.025):
        cv = build_control_volumes(generate({"shape": "rectangle", "h": h}, seed=0), "dual")
        zero = constant(0.0)
        bcs = [BoundaryData(name, "dirichlet", zero) for name in cv.boundary_names]
        traj = solve(cv, Conductivity("constant", k=k), bcs, exact(cv.centre, 0), t_end, t_end * h,
                     2, 0.5)
        hs.append(h)
        errors.append(l2(cv, traj.u[-1] - exact(cv.centre, t_end)))
    assert_converges(hs, errors, 2.0, 0.1, 1.5e-4)


def test_barenblatt_2d_rate():
    """The Barenblatt solution of u_t = ∇·(u ∇u) (m = 1) in 2-D.

    With τ = t/(m+1), u = v(x, τ) where v_τ = Δ(v^M), M = m + 1, and
    v = τ^{-α} (C - κ |x|² τ^{-2β})_+^{1/(M-1)}, α = d/(d(M-1)+2), β = α/d, κ = α(M-1)/(2dM).
    """
    m, d, C = 1.0, 2, 0.02
    M = m + 1
    alpha = d / (d * (M - 1) + 2)
    beta = alpha / d
    kappa = alpha * (M - 1) / (2 * d * M)

    def exact(x, t):
        tau = t / (m + 1)
        return (tau ** -alpha
                * np.maximum(C - kappa * (x ** 2).sum(1) * tau ** (-2 * beta), 0) ** (1 / (M - 1)))

    t0, t1 = 0.05, 0.25
    hs, errors = [], []
    for h in (0.2, 0.1, 0.05):
        mesh = generate({"shape": "rectangle", "h": h, "x0": -1, "x1": 1, "y0": -1, "y1": 1},
                        seed=0)
        cv = build_control_volumes(mesh, "dual")
        bcs = [BoundaryData(name, "flux", constant(0.0)) for name in cv.boundary_names]
        traj = solve(cv, Conductivity("power", m=m), bcs, exact(cv.centre, t0), t1 - t0, 0.05 * h,
                     2, 1.0)
        ref = exact(cv.centre, t1)
        hs.append(h)
        errors.append(np.sum(cv.volume * np.abs(traj.u[-1] - ref)) / np.sum(cv.volume * ref))
        # mass is conserved exactly (insulated box)
        mass = traj.u @ cv.volume
        assert np.ptp(mass) <= 1e-12 * mass[0]
    # second order away from the front, where u^m has a square-root edge: measured 1.82
    assert_converges(hs, errors, 2.0, 0.25, 0.03)


def stefan_similarity(u_star: float):
    """One-phase Stefan problem, u = 1 at x = 0, u = 0 ahead of the front (k_max = 1, k_min = 0).

    Behind the front u = 1 - (1 - u*) erf(x / (2√t)) / erf(λ); the front is x* = 2λ√t with
    λ the root of u* √π λ erf(λ) e^{λ²} = 1 - u* (Rankine–Hugoniot at the jump u* → 0).
    """
    lam = brentq(lambda z: u_star * np.sqrt(np.pi) * z * erf(z) * np.exp(z * z) - (1 - u_star),
                 1e-9, 10)
    return lam


def front_position(x, u, level):
    order = np.argsort(x)
    x, u = x[order], u[order]
    i = np.flatnonzero(u >= level)[-1]
    return x[i] + (x[i + 1] - x[i]) * (u[i] - level) / (u[i] - u[i + 1])


@pytest.mark.parametrize("kind", ["dual", "cells"])
def test_stefan_front_rate(kind):
    """Front position against the Neumann similarity solution; the step is smoothed over
    a width proportional to h, so the smoothing error vanishes with the mesh."""
    u_star, t_end = 0.6, 0.1
    lam = stefan_similarity(u_star)
    exact_front = 2 * lam * np.sqrt(t_end)
    hs, errors = [], []
    for n in (25, 50, 100, 200):
        cv = build_control_volumes(generate({"shape": "interval", "cells": n, "jitter": 0.3},
                                            seed=0), kind)
        bcs = [BoundaryData("left", "dirichlet", constant(1.0)),
               BoundaryData("right", "flux", constant(0.0))]
        k = Conductivity("stefan", u_star=u_star, k_max=1.0, k_min=0.0, smoothing=0.5 / n)
        traj = solve(cv, k, bcs, np.zeros(cv.num_cvs), t_end, t_end / (2 * n), 2, 1.0)
        hs.append(1 / n)
        errors.append(abs(front_position(cv.centre[:, 0], traj.u[-1], u_star / 2) - exact_front))
    # the smoothed Stefan step moves the front by O(h): first order (measured 1.27 dual, 0.96 cells)
    assert_converges(hs, errors, 1.0, 0.35, 3e-3)


@pytest.mark.parametrize("kind", ["dual", "cells"])
def test_stokes_second_problem_rate(kind):
    """Stokes' second problem: u(0, t) = U cos(ω t) drives u = U e^{-κy} cos(ωt - κy),
    κ = √(ω / 2ν); started from that periodic state, the far end held at the closed form."""
    nu, omega, U = 0.1, 2 * np.pi, 1.0
    kappa = np.sqrt(omega / (2 * nu))
    exact = lambda x, t: U * np.exp(-kappa * x[:, 0]) * np.cos(omega * t - kappa * x[:, 0])
    wall = lambda x, t=0.0, params=None: exact(x, t)
    hs, errors = [], []
    for n in (20, 40, 80, 160):
        cv = build_control_volumes(generate({"shape": "interval", "cells": n, "jitter": 0.3},
                                            seed=2), kind)
        bcs = [BoundaryData("left", "dirichlet", wall), BoundaryData("right", "dirichlet", wall)]
        traj = solve(cv, Conductivity("constant", k=nu), bcs, exact(cv.centre, 0), 1.0, 0.5 / n, 4,
                     0.5)
        hs.append(1 / n)
        errors.append(max(l2(cv, traj.u[i] - exact(cv.centre, t))
                          for i, t in enumerate(traj.times)))
    assert_converges(hs, errors, 2.0, 0.15, 1.2e-4)


def burgers_shock(nu: float, speed: float, jump: float, along: float = 1.0):
    """Viscous Burgers travelling shock: w_t + w w_s = ν_s w_ss is solved by
    w = c - a tanh(a (s - c t) / (2 ν_s)). In 1-D (s = x) u = w; in 2-D with
    u_t + (u²/2)_x + (u²/2)_y = ν Δu and s = x + y, u = w / 2 with ν_s = 2ν (``along`` = 2)."""
    nu_s = along * nu

    def exact(x, t):
        s = x.sum(axis=1)
        return (speed - jump * np.tanh(jump * (s - speed * t) / (2 * nu_s))) / along
    return exact


@pytest.mark.parametrize("kind", ["dual", "cells"])
@pytest.mark.parametrize("scheme, rate",
                         [("central", (2.0, 0.1, 3.5e-4)), ("upwind", (1.0, 0.1, 1.7e-2))])
def test_burgers_1d_rate(kind, scheme, rate):
    """Burgers (ν = 0.1) on jittered intervals, Dirichlet data from the travelling shock."""
    nu = 0.1
    exact = burgers_shock(nu, 0.5, 1.0)
    data = lambda x, t=0.0, params=None: exact(x, t)
    hs, errors = [], []
    for n in (20, 40, 80, 160):
        mesh = generate({"shape": "interval", "cells": n, "x0": -1.0, "x1": 1.0, "jitter": 0.3},
                        seed=1)
        cv = build_control_volumes(mesh, kind)
        bcs = [BoundaryData("left", "dirichlet", data), BoundaryData("right", "dirichlet", data)]
        traj = solve(cv, Conductivity("constant", k=nu), bcs, exact(cv.centre, 0), 1.0, 2 / n, 4,
                     0.5, convection=np.ones(1), scheme=scheme)
        hs.append(1 / n)
        errors.append(l2(cv, traj.u[-1] - exact(cv.centre, 1.0)))
    assert_converges(hs, errors, *rate)


def test_burgers_2d_rate():
    """2-D Burgers u_t + (u²/2)_x + (u²/2)_y = ν Δu on unstructured triangles (dual)."""
    nu = 0.1
    exact = burgers_shock(nu, 0.5, 1.0, along=2.0)
    data = lambda x, t=0.0, params=None: exact(x, t)
    hs, errors = [], []
    for h in (0.1, 0.05, 0.025):
        mesh = generate({"shape": "rectangle", "h": h, "x0": -0.5, "x1": 0.5, "y0": -0.5,
                         "y1": 0.5}, seed=0)
        cv = build_control_volumes(mesh, "dual")
        bcs = [BoundaryData(name, "dirichlet", data) for name in cv.boundary_names]
        traj = solve(cv, Conductivity("constant", k=nu), bcs, exact(cv.centre, 0), 0.5, h, 2, 0.5,
                     convection=np.ones(2))
        hs.append(h)
        errors.append(l2(cv, traj.u[-1] - exact(cv.centre, 0.5)))
    assert_converges(hs, errors, 2.0, 0.1, 2.2e-4)


@pytest.mark.parametrize("kind", ["dual", "cells"])
def test_burgers_periodic_mass_round_off(kind):
    """With periodic ends nothing enters or leaves: the mass stays constant to round-off
    while a steep front forms (ν = 0.1, upwind and central alike)."""
    for scheme in ("central", "upwind"):
        mesh = generate({"shape": "interval", "cells": 200, "jitter": 0.3}, seed=3)
        cv = build_control_volumes(mesh, kind, [("left", "right")])
        u0 = 0.5 + np.sin(2 * np.pi * cv.centre[:, 0])
        bcs = [BoundaryData("left", "periodic"), BoundaryData("right", "periodic")]
        traj = solve(cv, Conductivity("constant", k=0.1), bcs, u0, 1.0, 0.005, 10, 0.5,
                     convection=np.ones(1), scheme=scheme)
        mass = traj.u @ cv.volume
        assert np.abs(mass - mass[0]).max() <= 1e-13 * np.abs(mass[0])
        # the solution really moved (the front steepened and decayed): not a trivial constant
        assert np.abs(traj.u[-1] - u0).max() > 0.3


@pytest.mark.parametrize("kind, shape", [("dirichlet", np.sin), ("normal_derivative", np.cos)])
def test_wave_1d_rate_and_balance(kind, shape):
    """Standing wave u = cos(π c t) shape(π x), fixed (Dirichlet) or free (du/dn = 0) ends,
    jittered dual meshes, trapezoidal rule: second order, and the impulse balance of u at
    round-off."""
    from hybrid.solvers.wave import WaveSolver

    c = 1.0
    exact = lambda x, t: np.cos(np.pi * c * t) * shape(np.pi * x[:, 0])
    hs, errors = [], []
    for n in (20, 40, 80, 160):
        cv = build_control_volumes(generate({"shape": "interval", "cells": n, "jitter": 0.3},
                                            seed=1), "dual")
        solver = WaveSolver(cv, c, [BoundaryData("left", kind, constant(0.0)),
                                    BoundaryData("right", kind, constant(0.0))], {})
        traj = solver.run(exact(cv.centre, 0), 2.0, 1.0 / n, 4)
        scale = np.abs(traj.u).max() * cv.volume.max()
        assert np.abs(cv.balance_residual(traj.u, traj.flux, traj.source)).max() <= 1e-12 * scale
        hs.append(1 / n)
        errors.append(max(l2(cv, traj.u[i] - exact(cv.centre, t))
                          for i, t in enumerate(traj.times)))
    assert_converges(hs, errors, 2.0, 0.1, 2.5e-4)


@pytest.mark.parametrize("kind, shape", [("dirichlet", np.sin), ("normal_derivative", np.cos)])
def test_wave_2d_rate_and_energy(kind, shape):
    """u = cos(√2 π t) shape(π x) shape(π y) on unstructured triangles, fixed (sin) or free
    (cos, du/dn = 0) edges; the trapezoidal rule keeps the discrete energy ½|K|v² + ½ uᵀ(DA)u
    to round-off, and free edges keep the total amount of u."""
    from hybrid.solvers.wave import WaveSolver

    exact = lambda x, t: (np.cos(np.sqrt(2) * np.pi * t) * shape(np.pi * x[:, 0])
                          * shape(np.pi * x[:, 1]))
    hs, errors = [], []
    for h in (0.1, 0.05, 0.025):
        cv = build_control_volumes(generate({"shape": "rectangle", "h": h}, seed=0), "dual")
        solver = WaveSolver(cv, 1.0,
                            [BoundaryData(n, kind, constant(0.0)) for n in cv.boundary_names], {})
        u0 = exact(cv.centre, 0)
        if kind == "dirichlet":
            u0[solver.is_dir] = 0.0
        energy = solver.energy(u0, np.zeros(cv.num_cvs))
        traj = solver.run(u0, 1.0, h / 2, 2)
        assert abs(solver.energy(traj.u[-1], solver.velocity) - energy) <= 1e-12 * energy
        if kind == "normal_derivative":
            mass = traj.u @ cv.volume
            assert np.abs(mass - mass[0]).max() <= 1e-13 * np.abs(traj.u).max()
        hs.append(h)
        errors.append(l2(cv, traj.u[-1] - exact(cv.centre, 1.0)))
    assert_converges(hs, errors, 2.0, 0.1, 2e-3)
