"""ParaView's own reader on exported series, under ``xvfb-run pvbatch`` (tests only).

``open_in_paraview(files, colour, folder)`` opens each XDMF series, reports the times, the
sizes and every array (name, tuple count, sum) at the first and the last time, and saves a
screenshot coloured by ``colour``; ``assert_drawn`` checks that a screenshot is not blank.
``./test.sh`` installs ParaView where it is missing (scripts/setup-paraview.sh).
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import mpi_env

__all__ = ["HAVE_PARAVIEW", "needs_paraview", "open_in_paraview", "assert_drawn", "PVBATCH_SCRIPT"]

HAVE_PARAVIEW = shutil.which("pvbatch") is not None and shutil.which("xvfb-run") is not None
needs_paraview = pytest.mark.skipif(
    not HAVE_PARAVIEW,
    reason="ParaView's pvbatch or xvfb-run is not installed (./test.sh installs them on Debian: "
           "scripts/setup-paraview.sh)")

PVBATCH_SCRIPT = textwrap.dedent('''
    """Open every series on the command line with ParaView's own reader; print what it sees
    at the first and the last time, and save a screenshot of COLOUR at the last time."""
    import os
    import sys

    from paraview.simple import ColorBy, GetActiveViewOrCreate, Hide, OpenDataFile, ResetCamera, SaveScreenshot, Show
    from vtkmodules.util.numpy_support import vtk_to_numpy

    outdir, colour, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    view = GetActiveViewOrCreate("RenderView")
    for path in files:
        reader = OpenDataFile(path)
        print("FILE", path)
        print("READER", reader.GetXMLName())
        reader.UpdatePipelineInformation()
        times = [float(t) for t in reader.TimestepValues]
        print("TIMES", " ".join(repr(t) for t in times))
        association = None
        for k in (0, len(times) - 1):
            reader.UpdatePipeline(times[k])   # not simple.UpdatePipeline(time=0.0): it drops a zero time
            data = reader.GetClientSideObject().GetOutputDataObject(0)
            if data.IsA("vtkCompositeDataSet"):
                blocks = data.NewIterator()
                blocks.InitTraversal()
                data = blocks.GetCurrentDataObject()
            print("SIZE", k, data.GetNumberOfPoints(), data.GetNumberOfCells())
            for where, arrays in (("point", data.GetPointData()), ("cell", data.GetCellData())):
                for i in range(arrays.GetNumberOfArrays()):
                    values = vtk_to_numpy(arrays.GetArray(i))
                    print("ARRAY", k, where, arrays.GetArrayName(i), values.shape[0], repr(float(values.sum())))
                    if arrays.GetArrayName(i) == colour:
                        association = "POINTS" if where == "point" else "CELLS"
        view.ViewTime = times[-1]
        display = Show(reader, view)
        if association:   # a missing array fails in the test, with the arrays listed above
            ColorBy(display, (association, colour))
            display.RescaleTransferFunctionToDataRange(False, True)
            display.SetScalarBarVisibility(view, True)
        display.LineWidth = 5.0
        ResetCamera(view)
        png = os.path.join(outdir, os.path.splitext(os.path.basename(path))[0] + ".png")
        SaveScreenshot(png, view, ImageResolution=[640, 400])
        Hide(reader, view)
        print("PNG", png)
''')  # noqa: E501


def parse_pvbatch(stdout: str) -> dict[str, dict]:
    """The pvbatch script's report, per file."""
    report: dict[str, dict] = {}
    for line in stdout.splitlines():
        key, _, rest = line.partition(" ")
        if key == "FILE":
            current = report.setdefault(rest, {"arrays": {}, "size": {}})
        elif key == "READER":
            current["reader"] = rest
        elif key == "TIMES":
            current["times"] = np.array([float(t) for t in rest.split()])
        elif key == "SIZE":
            k, points, cells = map(int, rest.split())
            current["size"][k] = (points, cells)
        elif key == "ARRAY":
            k, where, name, tuples, total = rest.split()
            current["arrays"][(int(k), where, name)] = (int(tuples), float(total))
        elif key == "PNG":
            current["png"] = Path(rest)
    return report




def open_in_paraview(files: list[Path], colour: str, folder: Path) -> dict[str, dict]:
    """Run the script above on ``files``; its report per file (see :func:`parse_pvbatch`)."""
    script = Path(folder) / "open.py"
    script.write_text(PVBATCH_SCRIPT)
    env = {k: v for k, v in mpi_env().items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    for _ in range(3):   # a loaded machine can start Xvfb too slowly for pvbatch's first connection
        proc = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", "pvbatch",
                               str(script), str(folder), colour, *map(str, files)],
                              capture_output=True, text=True, timeout=300, env=env)
        if "bad X server connection" not in proc.stdout + proc.stderr:
            break
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # VTK's reader drops such arrays silently
    assert "Skipping unrecognized array type" not in proc.stderr
    report = parse_pvbatch(proc.stdout)
    assert sorted(report) == sorted(map(str, files)), (sorted(report), proc.stderr[-2000:])
    return report


def assert_drawn(png: Path) -> None:
    """A 640 x 400 PNG with more than 20 colours and more than 0.5% of its pixels drawn."""
    import matplotlib.image

    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)[..., :3]
    assert image.shape[:2] == (400, 640)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    drawn = np.any(image != image[0, 0], axis=-1).mean()
    assert len(colours) > 20 and drawn > 0.005, (len(colours), drawn)
