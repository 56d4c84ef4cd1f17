"""hybrid: a physics-constrained hybrid simulator.

Stages of the data flow, one sub-package each:

- :mod:`hybrid.case`     case directories: ``case.toml`` loading, validation, expressions,
  parameters
- :mod:`hybrid.mesh`     meshes (generated shapes, gmsh/XDMF files) and control volumes
- :mod:`hybrid.solvers`  reference solvers (finite volumes on the control volumes, PETSc Newton)
- :mod:`hybrid.stages`   the ``hybrid`` commands' stages (solve, export, run)
- :mod:`hybrid.export`   XDMF + HDF5 output for ParaView
"""

__version__ = "0.1.0"

import warnings

# Debian's python3-paraview brings Debian's matplotlib, whose mpl_toolkits shadow those of the
# venv's matplotlib: 3-D axes (unused here) then fail to import, with a warning at every plot
warnings.filterwarnings("ignore", message="Unable to import Axes3D", category=UserWarning)
