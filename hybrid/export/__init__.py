"""ParaView output: the one XDMF + HDF5 time-series writer (:mod:`.xdmf`)."""

__all__ = ["xdmf"]
