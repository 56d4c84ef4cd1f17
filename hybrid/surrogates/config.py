"""The typed configuration of a surrogate network: every argument its constructor takes, as
recorded in each member's checkpoint (as neuraloperator records its models' init arguments),
so a checkpoint rebuilds its own network and loads with ``weights_only``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """One member's network.

    Attributes:
        in_channels: grid input channels (initial state, parameters, coordinates, mask, and
            BOON's boundary data where it has them).
        out_channels: grid output channels: T states per component and T flux-density
            components per dimension.
        dim: the mesh's (and grid's) dimension.
        outputs: T, the output times.
        modes, width, layers: the Fourier layers' retained modes, channels and count.
        padding: grid points of zero padding per non-periodic side (0: none).
        heteroscedastic: the network also predicts a variance per output (``variance_channels``).
        variance_channels: its variance outputs (0 without).
        components: C, the state's components (a velocity's d, else 1).
        boon_ends: BOON's boundary kinds at the box's ends (None: the plain FNO).
        autoregressive: the network is one step t_n → t_{n+1} (:mod:`hybrid.surrogates.rollout`):
            its inputs have one more channel (the time) and its C + d outputs are one step's.
        history: time levels an autoregressive step sees: 1 (the state at t_n) or 2 (also the
            last increment, C more input channels).
    """

    in_channels: int
    out_channels: int
    dim: int
    outputs: int
    modes: int
    width: int
    layers: int
    padding: int = 0
    heteroscedastic: bool = False
    variance_channels: int = 0
    components: int = 1
    boon_ends: tuple | None = None
    autoregressive: bool = False
    history: int = 1

    def to_dict(self) -> dict:
        """Plain types only (what a ``weights_only`` checkpoint may hold)."""
        out = asdict(self)
        out["boon_ends"] = None if self.boon_ends is None else list(self.boon_ends)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """The config a checkpoint recorded (older checkpoints leave defaults out); unknown keys
        are an error, since the network they describe is not this one."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"model configuration keys {unknown} are unknown "
                             f"(known: {sorted(known)})")
        values = dict(values)
        if values.get("boon_ends") is not None:
            values["boon_ends"] = tuple(values["boon_ends"])
        return cls(**values)

    def build(self):
        """The untrained network."""
        if self.boon_ends:
            from hybrid.surrogates.boon import BoonFNO
            return BoonFNO(self.in_channels, self.out_channels, self.dim, ends=self.boon_ends,
                           outputs=self.outputs, components=self.components, modes=self.modes,
                           width=self.width, layers=self.layers,
                           variance_channels=self.variance_channels)
        from hybrid.surrogates.fno import FNO
        return FNO(self.in_channels, self.out_channels, self.dim, modes=self.modes,
                   width=self.width, layers=self.layers, padding=self.padding,
                   variance_channels=self.variance_channels)
