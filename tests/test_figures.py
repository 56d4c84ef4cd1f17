"""The report's figures: each writes a readable PNG of the documented size, draws what it
claims (variant colours, shared colour scales, log axes, the front zoom) and rejects
arrays of the wrong shape with a message naming the argument."""

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.colors import to_rgb

from hybrid.report import figures
from hybrid.report.figures import (DPI, VARIANT_STYLE, error_over_time, field_on_mesh,
                                   front_histogram, mass_over_time, profiles_with_bands,
                                   variant_style)

T = np.linspace(0.0, 1.0, 31)


def read_png(path, inches):
    """The PNG as an (H, W, channels) array, checked against figsize × DPI and for content."""
    assert path.is_file() and path.stat().st_size > 1000
    image = mpimg.imread(path)
    assert image.shape[:2] == (round(inches[1] * DPI), round(inches[0] * DPI))
    assert image[..., :3].std() > 0.05          # not a blank canvas
    return image


def colour_fraction(image, colour, tol=0.02):
    """Fraction of pixels within ``tol`` of ``colour`` in every RGB channel."""
    return float(np.mean(np.all(np.abs(image[..., :3] - np.asarray(to_rgb(colour))) < tol,
                                axis=-1)))


@pytest.fixture
def kept_figures(monkeypatch):
    """The figures the functions draw, kept open (pyplot.close is intercepted) for inspection."""
    kept = []
    real_close = figures.plt.close

    def keep(fig=None):
        # matplotlib itself may call close("all") (e.g. when it switches backend): let that through
        if isinstance(fig, figures.plt.Figure):
            kept.append(fig)
        else:
            real_close(fig)
    monkeypatch.setattr(figures.plt, "close", keep)
    yield kept
    monkeypatch.undo()
    for fig in kept:
        figures.plt.close(fig)


def unit_square(n=6):
    """Right-triangle mesh of [0, 1]²: (n+1)² points, 2n² cells."""
    g = np.linspace(0.0, 1.0, n + 1)
    X, Y = np.meshgrid(g, g)
    points = np.c_[X.ravel(), Y.ravel()]
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = (idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(),
                  idx[1:, 1:].ravel())
    return points, np.r_[np.c_[a, b, d], np.c_[a, d, c]]


def test_each_variant_has_one_colour_in_every_figure():
    colours = [s["color"] for s in VARIANT_STYLE.values()]
    assert set(VARIANT_STYLE) == {"raw", "hardc", "softc", "boon", "unpadded", "global", "per-cell",
                                  "per-cell+boundary"}
    assert len(set(colours)) == len(colours) and "black" not in colours
    other = variant_style("my-variant")
    assert other == variant_style("my-variant") and other["color"] not in colours


def test_mass_over_time(tmp_path, kept_figures):
    masses = {"raw": 1 + 0.2 * T, "per-cell": np.ones_like(T), "mystery": 1 - 0.1 * T}
    path = mass_over_time(tmp_path / "mass.png", T, np.ones_like(T), masses, "Total mass")
    assert path == tmp_path / "mass.png"
    image = read_png(path, (7, 4.5))
    assert colour_fraction(image, VARIANT_STYLE["raw"]["color"]) > 1e-3
    assert colour_fraction(image, variant_style("mystery")["color"]) > 1e-3
    ax = kept_figures[0].axes[0]
    assert [line.get_label() for line in ax.lines] == ["solver (truth)", "raw", "per-cell",
                                                       "mystery"]
    assert to_rgb(ax.lines[0].get_color()) == (0.0, 0.0, 0.0)
    assert to_rgb(ax.lines[1].get_color()) == to_rgb(VARIANT_STYLE["raw"]["color"])
    with pytest.raises(ValueError, match="true_mass"):
        mass_over_time(tmp_path / "bad.png", T, np.ones(5), masses, "x")
    with pytest.raises(ValueError, match=r"variant_mass\['raw'\]"):
        mass_over_time(tmp_path / "bad.png", T, np.ones_like(T), {"raw": np.ones((2, T.size))}, "x")
    assert not (tmp_path / "bad.png").exists()


def profile_data(x):
    truth = np.clip(1 - x / 0.6, 0.0, 1.0)
    variants = {"raw": (np.clip(1 - x / 0.55, 0, 1), np.full_like(x, 0.05)),
                "per-cell+boundary": (np.clip(1 - x / 0.61, 0, 1), 0.02 + 0.02 * x)}
    return truth, variants


def test_profiles_with_bands_sorts_unstructured_centres(tmp_path):
    x = np.sort(np.random.default_rng(0).uniform(0.0, 2.0, 80))
    perm = np.random.default_rng(1).permutation(x.size)
    truth, variants = profile_data(x)
    ordered = read_png(profiles_with_bands(tmp_path / "sorted.png", x, truth, variants, "u"),
                       (7, 4.5))
    shuffled = read_png(profiles_with_bands(tmp_path / "shuffled.png", x[perm], truth[perm],
                                            {k: (m[perm], s[perm])
                                             for k, (m, s) in variants.items()}, "u"), (7, 4.5))
    # an unsorted x drawn as given would zigzag across the axes
    np.testing.assert_array_equal(ordered, shuffled)


def test_profiles_with_bands_enlarges_the_front_region(tmp_path, kept_figures):
    x = np.random.default_rng(2).permutation(np.linspace(0.0, 2.0, 101))
    truth, variants = profile_data(x)
    image = read_png(profiles_with_bands(tmp_path / "p.png", x, truth, variants, "u", front=1.2),
                     (12, 4.5))
    assert colour_fraction(image, VARIANT_STYLE["raw"]["color"]) > 3e-4   # more than its legend key
    full, zoom = kept_figures[0].axes
    np.testing.assert_allclose(zoom.get_xlim(), (1.2 - 0.2, 1.2 + 0.2))     # w = 10% of the width 2
    assert any(np.allclose(line.get_xdata(), 1.2) for line in full.lines)  # the dotted front marker
    # the 90% band is mean ± 1.645 σ
    band = full.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx(1 + 1.6448536269514722 * 0.05, rel=1e-9)
    with pytest.raises(ValueError, match=r"variants\['raw'\] std"):
        profiles_with_bands(tmp_path / "bad.png", x, truth, {"raw": (truth, np.ones(3))}, "u")
    with pytest.raises(ValueError, match="truth"):
        profiles_with_bands(tmp_path / "bad.png", x, truth[:-1], variants, "u")
    with pytest.raises(ValueError, match="mean, std"):
        profiles_with_bands(tmp_path / "bad.png", x, truth, {"raw": truth}, "u")


def test_front_histogram(tmp_path, kept_figures):
    rng = np.random.default_rng(3)
    # identical samples must not break the bins
    samples = {"raw": 0.55 + 0.01 * rng.standard_normal(300),
               "global": 0.6 + 0.01 * rng.standard_normal(300), "hardc": np.full(300, 0.58)}
    image = read_png(front_histogram(tmp_path / "front.png", samples, 0.6, "Posterior fronts"),
                     (7, 4.5))
    assert colour_fraction(image, VARIANT_STYLE["global"]["color"]) > 1e-3
    ax = kept_figures[0].axes[0]
    vertical = {(round(line.get_xdata()[0], 9), line.get_linestyle()) for line in ax.lines
                if len(line.get_xdata())}
    assert (0.6, "-") in vertical                                       # the solver's front
    assert (round(samples["raw"].mean(), 9), "--") in vertical          # the raw sample mean
    with pytest.raises(ValueError, match=r"samples\['raw'\]"):
        front_histogram(tmp_path / "bad.png", {"raw": np.ones((3, 4))}, 0.6, "x")


def test_error_over_time_uses_a_log_axis_only_for_positive_errors(tmp_path, kept_figures):
    errors = {"raw": 0.1 * (1 + T), "per-cell+boundary": 0.01 * (1 + T)}
    read_png(error_over_time(tmp_path / "e.png", T, errors, "relative L2 error", "Error"), (7, 4.5))
    read_png(error_over_time(tmp_path / "z.png", T, {**errors, "exact": np.zeros_like(T)},
                             "rel. L2", "Error"),
             (7, 4.5))
    read_png(error_over_time(tmp_path / "l.png", T, errors, "rel. L2", "Error", log=False),
             (7, 4.5))
    assert [f.axes[0].get_yscale() for f in kept_figures] == ["log", "linear", "linear"]
    assert kept_figures[0].axes[0].get_ylabel() == "relative L2 error"
    with pytest.raises(ValueError, match=r"errors\['raw'\]"):
        error_over_time(tmp_path / "bad.png", T, {"raw": T[1:]}, "e", "x")


@pytest.mark.parametrize("location", ["point", "cell"])
def test_field_on_mesh_shares_colour_limits_between_fields_but_not_errors(tmp_path, kept_figures,
                                                                          location):
    points, cells = unit_square()
    at = points if location == "point" else points[cells].mean(axis=1)
    u = np.sin(np.pi * at[:, 0]) * at[:, 1]
    fields = {"solver": u, "raw mean": 1.5 * u - 0.2, "|error| raw": np.abs(0.5 * u - 0.2),
              "error hardc": 0.01 * at[:, 0]}
    path = field_on_mesh(tmp_path / f"{location}.png", points, cells, fields, "u",
                         location=location)
    image = read_png(path, (4.2 * 4, 3.8))
    # viridis' top end: the field is drawn
    assert colour_fraction(image, "#fde725", tol=0.06) > 1e-4
    panels = [ax for ax in kept_figures[0].axes if ax.get_title() in fields]
    limits = [ax.collections[0].get_clim() for ax in panels]
    both = np.concatenate([u, 1.5 * u - 0.2])
    np.testing.assert_allclose(limits[0], (both.min(), both.max()))
    np.testing.assert_allclose(limits[1], limits[0])
    errs = np.concatenate([fields["|error| raw"], fields["error hardc"]])
    np.testing.assert_allclose(limits[2], (errs.min(), errs.max()))
    np.testing.assert_allclose(limits[3], limits[2])
    assert all(ax.get_aspect() == 1.0 for ax in panels)


def test_field_on_mesh_rejects_bad_meshes_and_fields(tmp_path):
    points, cells = unit_square(3)
    good = {"u": np.zeros(len(points))}
    with pytest.raises(ValueError, match=r"fields\['u'\]"):
        field_on_mesh(tmp_path / "b.png", points, cells, {"u": np.zeros(len(points))}, "u",
                      location="cell")
    with pytest.raises(ValueError, match="cells must be triangles"):
        field_on_mesh(tmp_path / "b.png", points, np.c_[cells, cells[:, :1]], good, "u")
    with pytest.raises(ValueError, match="vertex indices"):
        field_on_mesh(tmp_path / "b.png", points, cells + len(points), good, "u")
    with pytest.raises(ValueError, match="points"):
        field_on_mesh(tmp_path / "b.png", points[:, :1], cells, good, "u")
    with pytest.raises(ValueError, match="location"):
        field_on_mesh(tmp_path / "b.png", points, cells, good, "u", location="edge")


def test_profiles_over_time_draws_three_times_with_log_errors(tmp_path, kept_figures):
    x = np.linspace(0.0, 1.0, 40)[::-1]              # unsorted input is sorted for drawing
    truth = np.sin(np.pi * x)[None] * np.exp(-T)[:, None]
    variants = {"raw": truth + 0.01, "boon": truth + 1e-4 * x}
    path = figures.profiles_over_time(tmp_path / "p.png", x, T, truth, variants, "title")
    read_png(path, (13.5, 7))
    fig = kept_figures[-1]
    tops, bottoms = fig.axes[:3], fig.axes[3:]
    assert [ax.get_title() for ax in tops] == ["t = 0.0333", "t = 0.533", "t = 1"]
    assert all(ax.get_yscale() == "log" for ax in bottoms)
    raw_err = [line for line in bottoms[0].get_lines() if line.get_label() == "raw"][0].get_ydata()
    assert np.allclose(raw_err, 0.01)
    with pytest.raises(ValueError, match=r"variants\['raw'\]"):
        figures.profiles_over_time(tmp_path / "q.png", x, T, truth, {"raw": truth[:, :5]}, "title")


def test_boundary_over_time_puts_exact_variants_on_the_floor(tmp_path, kept_figures):
    t = T[1:]
    data = np.sin(np.pi * t)
    ends = [("left end", "u", data, {"raw": data + 0.1, "boon": data.copy()}),
            ("right end", "du/dn", 0 * t, {"raw": 0.5 + 0 * t, "boon": 0 * t})]
    path = figures.boundary_over_time(tmp_path / "b.png", t, ends, "title")
    read_png(path, (11, 7))
    fig = kept_figures[-1]
    bottom_left = fig.axes[2]
    boon = [line for line in bottom_left.get_lines() if line.get_label() == "boon"][0].get_ydata()
    assert bottom_left.get_yscale() == "log" and np.all(boon == 1e-16)
    with pytest.raises(ValueError, match="ends must list"):
        figures.boundary_over_time(tmp_path / "c.png", t, [], "title")
    with pytest.raises(ValueError, match=r"ends\[0\] data"):
        figures.boundary_over_time(tmp_path / "d.png", t, [("l", "u", data[:3], {"raw": data})],
                                   "title")


@pytest.mark.parametrize("at", [None, 0.37])
def test_a_tetrahedral_mesh_slice_is_the_exact_cross_section(at, tmp_path, kept_figures):
    """The mid-plane (or any plane) cut through a box's tetrahedra covers the box's cross-section
    exactly (area 1), interpolates a linear field exactly, and draws as a 2-D field figure."""
    from hybrid.mesh.shapes import generate

    mesh = generate({"shape": "box", "h": 0.2}, seed=0)
    xy, tris, weights, owner = figures.tetrahedra_slice(mesh.points, mesh.cells, axis=2, at=at)
    corners = xy[tris]
    area = 0.5 * np.abs(np.cross(corners[:, 1] - corners[:, 0],
                                 corners[:, 2] - corners[:, 0])).sum()
    assert abs(area - 1.0) < 1e-12
    linear = mesh.points @ np.array([1.0, -2.0, 3.0])
    z = 0.5 if at is None else at
    np.testing.assert_allclose(weights @ linear, xy @ np.array([1.0, -2.0]) + 3.0 * z, atol=1e-12)
    assert owner.shape == (len(tris),) and np.all(np.isin(owner, np.arange(len(mesh.cells))))
    path = figures.field_on_mesh(tmp_path / "slice.png", xy, tris, {"u": weights @ linear}, "slice")
    assert path.is_file() and len(kept_figures) == 1
