"""Reference solvers on the control volumes: GPME and Burgers (:mod:`.gpme`), the wave
equation (:mod:`.wave`), incompressible Navier–Stokes (:mod:`.navier_stokes`)."""

__all__ = ["boundaries", "gpme", "wave", "navier_stokes"]
