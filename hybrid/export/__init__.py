"""ParaView output: the XDMF + HDF5 time-series writer (:mod:`.xdmf`) and the VTK XML
.pvd + .vtu writer (:mod:`.vtu`), for readers without XDMF."""

__all__ = ["xdmf", "vtu"]
