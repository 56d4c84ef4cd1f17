"""The figures of a validation report, each written as one PNG from plain numpy arrays.

ProbConserv's three figures (Hansen et al. 2023, "Learning physical models that can
respect conservation laws", figs. 3–5) — total mass over time, solution profiles with 90%
intervals and the front region enlarged, the histogram of posterior front positions —
plus the error over time per variant and field plots on 2-D triangle meshes.

Every function takes the output ``path`` first and returns it as a :class:`Path`; every
variant is drawn in the colour and marker of :data:`VARIANT_STYLE` (or a fallback chosen
from its name), so one variant looks the same in all figures. The 90% interval is
mean ± z₀.₉₅ σ with z₀.₉₅ = :data:`hybrid.metrics.Z90`.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # files only: no display on compute nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.tri import Triangulation  # noqa: E402

from hybrid.files import atomic_path  # noqa: E402
from hybrid.metrics import Z90  # noqa: E402

__all__ = ["DPI", "VARIANT_STYLE", "variant_style", "mass_over_time", "profiles_with_bands",
           "front_histogram", "error_over_time", "field_on_mesh", "profiles_over_time",
           "boundary_over_time", "tetrahedra_slice"]

DPI = 120
# the variants of docs/metrics.md; truth is always black
VARIANT_STYLE = {
    "raw": {"color": "tab:red", "marker": "o"},
    "hardc": {"color": "tab:orange", "marker": "v"},
    "softc": {"color": "tab:purple", "marker": "s"},
    "boon": {"color": "tab:olive", "marker": "X"},
    "unpadded": {"color": "tab:brown", "marker": "*"},
    "global": {"color": "tab:blue", "marker": "^"},
    "per-cell": {"color": "tab:green", "marker": "D"},
    "per-cell+boundary": {"color": "tab:cyan", "marker": "P"},
}
_FALLBACK_COLORS = ("tab:brown", "tab:pink", "tab:olive", "tab:gray", "navy", "darkgoldenrod",
                    "teal", "crimson")
_FALLBACK_MARKERS = ("X", "*", "h", "<", ">", "p")


def variant_style(name: str) -> dict:
    """Colour and marker of a variant: :data:`VARIANT_STYLE`, else picked from a hash of
    the name (not from the drawing order, so it is the same in every figure and run)."""
    if name in VARIANT_STYLE:
        return dict(VARIANT_STYLE[name])
    h = zlib.crc32(name.encode())
    return {"color": _FALLBACK_COLORS[h % len(_FALLBACK_COLORS)],
            "marker": _FALLBACK_MARKERS[(h // len(_FALLBACK_COLORS)) % len(_FALLBACK_MARKERS)]}


def _vector(arg: str, value, size: int | None = None) -> np.ndarray:
    """``value`` as a 1-D float array (of length ``size`` if given), else ValueError naming
    ``arg``."""
    a = np.asarray(value, dtype=float)
    if a.ndim != 1 or a.size == 0 or (size is not None and a.size != size):
        want = f"({size},)" if size is not None else "(n,) with n > 0"
        raise ValueError(f"{arg} must have shape {want}, found {a.shape}")
    return a


def _named(arg: str, mapping) -> dict:
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"{arg} must be a non-empty dict of name -> array")
    return mapping


def _save(fig, path) -> Path:
    path = Path(path)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def _markevery(n: int, k: int):
    """At most ~15 markers per line, staggered by the line's index k so that the markers
    of coinciding curves (every conservative variant has the same mass) stay visible."""
    step = max(1, n // 15)
    return (k % step, step)


def mass_over_time(path, times, true_mass, variant_mass: dict, title: str) -> Path:
    """Total mass M(t) = Σ_K |K| u_K(t) of the solver (thick black) and of each variant
    (coloured, with markers); a conservative variant lies on the black line. 7 × 4.5 in."""
    t = _vector("times", times)
    m_true = _vector("true_mass", true_mass, t.size)
    curves = {name: _vector(f"variant_mass[{name!r}]", m, t.size)
              for name, m in _named("variant_mass", variant_mass).items()}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(t, m_true, color="black", lw=3.5, label="solver (truth)", zorder=1)
    for k, (name, m) in enumerate(curves.items()):
        ax.plot(t, m, lw=1.4, ms=5, markevery=_markevery(t.size, k), label=name, zorder=2,
                **variant_style(name))
    ax.set_xlabel("time t")
    ax.set_ylabel("total mass Σ|K| u_K")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    ax.legend(fontsize="small")
    return _save(fig, path)


def profiles_with_bands(path, x, truth, variants: dict, title: str,
                        front: float | None = None) -> Path:
    """Profiles u(x) at the report time: the solver in black, each variant's mean with its
    90% interval mean ± 1.645 σ shaded. ``variants`` maps name -> (mean, std). ``x`` may be
    unsorted (cell centres of an unstructured mesh). With ``front``, a dotted line marks it
    and a second panel enlarges [front − w, front + w], w = 10% of the domain width.
    7 × 4.5 in alone, 12 × 4.5 in with the front panel."""
    x = _vector("x", x)
    u_true = _vector("truth", truth, x.size)
    bands = {}
    for name, pair in _named("variants", variants).items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"variants[{name!r}] must be a (mean, std) pair")
        mean, std = (_vector(f"variants[{name!r}] mean", pair[0], x.size),
                     _vector(f"variants[{name!r}] std", pair[1], x.size))
        if np.any(std < 0):
            raise ValueError(f"variants[{name!r}] std must be non-negative")
        bands[name] = (mean, std)
    if front is not None and not np.isfinite(front):
        raise ValueError(f"front must be a finite x-position, found {front!r}")
    order = np.argsort(x, kind="stable")
    x, u_true = x[order], u_true[order]
    bands = {k: (m[order], s[order]) for k, (m, s) in bands.items()}

    if front is None:
        fig, axes = plt.subplots(figsize=(7, 4.5))
        axes = [axes]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    for ax in axes:
        for name, (mean, std) in bands.items():
            style = variant_style(name)
            ax.fill_between(x, mean - Z90 * std, mean + Z90 * std, color=style["color"], alpha=0.18,
                            lw=0)
            ax.plot(x, mean, color=style["color"], lw=1.4, label=f"{name} mean ± 90%")
        ax.plot(x, u_true, color="black", lw=2.2, label="solver (truth)")
        if front is not None:
            ax.axvline(front, color="black", ls=":", lw=1.3, label=f"front x = {front:.4g}")
        ax.set_xlabel("position x")
        ax.set_ylabel("u(x)")
        ax.grid(True, alpha=0.4)
    axes[0].set_title(title)
    axes[0].legend(fontsize="small")
    if front is not None:
        w = 0.1 * (x[-1] - x[0])
        lo, hi = front - w, front + w
        zoom = axes[1]
        zoom.set_xlim(lo, hi)
        # y-limits from what is inside the window, bands included, so the zoom is a zoom
        inside = (x >= lo) & (x <= hi)
        if inside.any():
            vals = [u_true[inside]] + [v for m, s in bands.values()
                                       for v in (m[inside] - Z90 * s[inside],
                                                  m[inside] + Z90 * s[inside])]
            ymin, ymax = min(v.min() for v in vals), max(v.max() for v in vals)
            pad = 0.05 * (ymax - ymin) or 0.05 * max(abs(ymax), 1.0)
            zoom.set_ylim(ymin - pad, ymax + pad)
        zoom.set_title(f"front region x ∈ [{lo:.3g}, {hi:.3g}]")
    return _save(fig, path)


def front_histogram(path, samples: dict, true_front: float, title: str,
                    xlabel: str = "front position x") -> Path:
    """Histogram of posterior front positions per variant (step outlines over light bars,
    shared bins), the solver's front as a solid black line, each variant's sample mean as
    a dashed line in its colour. ``xlabel`` names the front measure (a position in 1-D, the
    volume behind the front in 2-D/3-D). 7 × 4.5 in."""
    draws = {name: _vector(f"samples[{name!r}]", s)
             for name, s in _named("samples", samples).items()}
    if not np.isfinite(true_front):
        raise ValueError(f"true_front must be finite, found {true_front!r}")
    pooled = np.concatenate([*draws.values(), [float(true_front)]])
    pooled = pooled[np.isfinite(pooled)]
    lo, hi = pooled.min(), pooled.max()
    if hi - lo <= 1e-12 * max(abs(hi), 1.0):
        # every sample identical (a deterministic variant): give the bins a width
        half = 0.01 * max(abs(hi), 1.0)
        lo, hi = lo - half, hi + half
    n_bins = int(np.clip(np.sqrt(max(len(s) for s in draws.values())), 10, 50))
    bins = np.linspace(lo, hi, n_bins + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in draws.items():
        color = variant_style(name)["color"]
        s = s[np.isfinite(s)]
        ax.hist(s, bins=bins, color=color, alpha=0.2)
        ax.hist(s, bins=bins, color=color, histtype="step", lw=1.6, label=name)
        ax.axvline(s.mean(), color=color, ls="--", lw=1.5)
    ax.axvline(true_front, color="black", lw=2.5, label=f"solver front {true_front:.4g}")
    ax.plot([], [], color="gray", ls="--", label="sample means")   # legend key for the dashed lines
    ax.set_xlabel(xlabel)
    ax.set_ylabel("number of posterior samples")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    ax.legend(fontsize="small")
    return _save(fig, path)


def error_over_time(path, times, errors: dict, ylabel: str, title: str, log: bool = True) -> Path:
    """One error curve per variant against the output times (e.g. relative L2 error);
    the y-axis is logarithmic when ``log`` and every value is positive. 7 × 4.5 in."""
    t = _vector("times", times)
    curves = {name: _vector(f"errors[{name!r}]", e, t.size)
              for name, e in _named("errors", errors).items()}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (name, e) in enumerate(curves.items()):
        ax.plot(t, e, lw=1.4, ms=5, markevery=_markevery(t.size, k), label=name,
                **variant_style(name))
    values = np.concatenate(list(curves.values()))
    if log and np.all(values[np.isfinite(values)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("time t")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both" if ax.get_yscale() == "log" else "major", alpha=0.4)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _is_error(name: str) -> bool:
    return name.startswith("|") or name.lower().startswith("error")


def tetrahedra_slice(points: np.ndarray, cells: np.ndarray, axis: int = 2, at: float | None = None):
    """The plane ``x[axis] = at`` (the mid-plane of the mesh by default) cut through a tetrahedral
    mesh, as triangles: (vertices (Q, 2): the two other coordinates; triangles (R, 3); ``weights``
    (Q, P) sparse, the P1 interpolation of vertex values onto the slice's vertices; ``cell`` (R,),
    the tetrahedron each triangle cuts, for values per cell). A tetrahedron the plane cuts gives
    one triangle (three edges cut) or a quadrilateral split in two (four)."""
    import scipy.sparse as sp

    pts, tets = np.asarray(points, float), np.asarray(cells)
    if pts.ndim != 2 or pts.shape[1] != 3 or tets.ndim != 2 or tets.shape[1] != 4:
        raise ValueError(f"a tetrahedral mesh is (P, 3) points and (C, 4) cells, found {pts.shape} "
                         f"and {tets.shape}")
    lo, hi = pts[:, axis].min(), pts[:, axis].max()
    at = 0.5 * (lo + hi) if at is None else float(at)
    height = pts[:, axis] - at
    height[height == 0.0] = 1e-12 * max(hi - lo, 1e-300)   # no vertex exactly on the plane
    pairs = np.array([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])
    a, b = tets[:, pairs[:, 0]], tets[:, pairs[:, 1]]                   # (C, 6) edge ends
    cut = height[a] * height[b] < 0
    counts = cut.sum(axis=1)
    keep = counts >= 3
    a, b, cut, counts, index = a[keep], b[keep], cut[keep], counts[keep], np.flatnonzero(keep)
    gap = height[a] - height[b]
    t = np.divide(height[a], gap, out=np.zeros_like(gap), where=cut)   # where each cut edge
                                                                       # meets the plane
    # slice vertices: one per cut edge (shared edges are repeated; the figure does not mind)
    first = np.cumsum(np.concatenate([[0], counts[:-1]]))
    ea, eb, et = a[cut], b[cut], t[cut]
    Q = len(ea)
    weights = sp.csr_matrix((np.concatenate([1 - et, et]),
                             (np.tile(np.arange(Q), 2), np.concatenate([ea, eb]))),
                            shape=(Q, len(pts)))
    others = [k for k in range(3) if k != axis]
    xy = weights @ pts[:, others]
    tris, owner = [], []
    three = counts == 3
    tris.append(first[three, None] + np.arange(3))
    owner.append(index[three])
    four = np.flatnonzero(counts == 4)
    if len(four):
        # the 2-2 split: order the four cut points around the quadrilateral by angle about their
        # centre
        quad = first[four, None] + np.arange(4)
        centre = xy[quad].mean(axis=1, keepdims=True)
        angle = np.arctan2(xy[quad][..., 1] - centre[..., 1], xy[quad][..., 0] - centre[..., 0])
        quad = np.take_along_axis(quad, np.argsort(angle, axis=1), axis=1)
        tris += [quad[:, [0, 1, 2]], quad[:, [0, 2, 3]]]
        owner += [index[four], index[four]]
    return xy, np.concatenate(tris), weights, np.concatenate(owner)


def field_on_mesh(path, points, cells, fields: dict, title: str, location: str = "point",
                  scale: tuple[float, float] | None = None, cmap: str = "viridis") -> Path:
    """A row of panels, one per named field, on a 2-D triangle mesh (``points`` (P, 2) or
    (P, 3), of which x and y are drawn; ``cells`` (C, 3) vertex indices). ``location``
    "point": values per vertex (P,), Gouraud-shaded; "cell": values per triangle (C,),
    flat. Fields share one colour scale (viridis); error fields — names starting with "|"
    or "error" — share another (magma), so raw and constrained errors compare directly.
    ``scale`` = (low, high) fixes the non-error colour scale, values beyond it saturate; ``cmap`` is
    its colour map. Each panel 4.2 × 3.8 in."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] not in (2, 3):
        raise ValueError(f"points must have shape (P, 2) or (P, 3), found {pts.shape}")
    tri = np.asarray(cells)
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.shape[0] == 0:
        raise ValueError(f"cells must be triangles, shape (C, 3), found {tri.shape}")
    if not np.issubdtype(tri.dtype, np.integer) or tri.min() < 0 or tri.max() >= pts.shape[0]:
        raise ValueError(f"cells must hold vertex indices in [0, {pts.shape[0]})")
    if location not in ("point", "cell"):
        raise ValueError(f"location must be 'point' or 'cell', found {location!r}")
    size = pts.shape[0] if location == "point" else tri.shape[0]
    values = {name: _vector(f"fields[{name!r}]", f, size)
              for name, f in _named("fields", fields).items()}
    mesh = Triangulation(pts[:, 0], pts[:, 1], tri)
    limits = {}
    for group in (False, True):
        members = [v for k, v in values.items() if _is_error(k) == group]
        if members:
            limits[group] = (min(np.nanmin(v) for v in members), max(np.nanmax(v) for v in members))
    if scale is not None:
        lo_hi = tuple(float(v) for v in scale)
        if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
            raise ValueError(f"scale must be (low, high) with low < high, found {scale!r}")
        limits[False] = lo_hi
    fig, axes = plt.subplots(1, len(values), figsize=(4.2 * len(values), 3.8), squeeze=False)
    for ax, (name, v) in zip(axes[0], values.items()):
        err = _is_error(name)
        vmin, vmax = limits[err]
        opts = {"cmap": "magma" if err else cmap, "vmin": vmin, "vmax": vmax}
        if location == "point":
            image = ax.tripcolor(mesh, v, shading="gouraud", **opts)
        else:
            image = ax.tripcolor(mesh, facecolors=v, shading="flat", **opts)
        fig.colorbar(image, ax=ax, label=name)
        ax.set_aspect("equal")
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def profiles_over_time(path, x, times, truth, variants: dict, title: str, count: int = 3) -> Path:
    """1-D profiles at ``count`` times spread over the run (top row: the solver in black and
    each variant's mean) and their absolute errors |u - u_solver| (bottom row, log scale).
    ``truth`` and each variant are (T+1, N) over ``times``. 4.5 in per column, 7 in high."""
    x = _vector("x", x)
    t = _vector("times", times)
    u_true = np.asarray(truth, dtype=float)
    if u_true.shape != (t.size, x.size):
        raise ValueError(f"truth must have shape {(t.size, x.size)}, found {u_true.shape}")
    curves = {}
    for name, u in _named("variants", variants).items():
        u = np.asarray(u, dtype=float)
        if u.shape != u_true.shape:
            raise ValueError(f"variants[{name!r}] must have shape {u_true.shape}, found {u.shape}")
        curves[name] = u
    order = np.argsort(x, kind="stable")
    picks = np.unique(np.linspace(1, t.size - 1, count).round().astype(int))
    fig, axes = plt.subplots(2, len(picks), figsize=(4.5 * len(picks), 7), sharex=True,
                             squeeze=False)
    for j, n in enumerate(picks):
        top, bottom = axes[0, j], axes[1, j]
        top.plot(x[order], u_true[n, order], color="black", lw=2.2, label="solver (truth)")
        for k, (name, u) in enumerate(curves.items()):
            style = variant_style(name)
            top.plot(x[order], u[n, order], color=style["color"], lw=1.3, label=name)
            err = np.maximum(np.abs(u[n, order] - u_true[n, order]), 1e-16)
            bottom.semilogy(x[order], err, color=style["color"], lw=1.1, marker=style["marker"],
                            ms=4, markevery=_markevery(x.size, k), label=name)
        top.set_title(f"t = {t[n]:.3g}")
        top.grid(True, alpha=0.4)
        bottom.grid(True, alpha=0.4)
        bottom.set_xlabel("position x")
    axes[0, 0].set_ylabel("u(x)")
    axes[1, 0].set_ylabel("|u − u_solver|")
    axes[0, 0].legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def boundary_over_time(path, times, ends: list, title: str) -> Path:
    """What each end of a 1-D domain sees over time: for every end a panel of the boundary
    quantity (the end value for a Dirichlet end, the outward derivative du/dn for a Neumann
    end) with the data in black and each variant in colour, and below it the variant's
    distance from the data (log scale; exact variants sit at the floor 1e-16).
    ``ends``: a list of (label, quantity name, data (T,), {variant: values (T,)})."""
    t = _vector("times", times)
    if not ends:
        raise ValueError("ends must list at least one end")
    fig, axes = plt.subplots(2, len(ends), figsize=(5.5 * len(ends), 7), sharex=True, squeeze=False)
    for j, (label, quantity, data, variants) in enumerate(ends):
        data = _vector(f"ends[{j}] data", data, t.size)
        top, bottom = axes[0, j], axes[1, j]
        top.plot(t, data, color="black", lw=2.4, label="boundary data")
        for k, (name, values) in enumerate(_named(f"ends[{j}] variants", variants).items()):
            values = _vector(f"ends[{j}][{name!r}]", values, t.size)
            style = variant_style(name)
            top.plot(t, values, lw=1.3, ms=5, markevery=_markevery(t.size, k), label=name, **style)
            bottom.semilogy(t, np.maximum(np.abs(values - data), 1e-16), lw=1.3, ms=5,
                            markevery=_markevery(t.size, k), label=name, **style)
        top.set_title(label)
        top.set_ylabel(quantity)
        bottom.set_ylabel(f"|{quantity} − data|")
        bottom.set_xlabel("time t")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.4)
    axes[0, 0].legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)
