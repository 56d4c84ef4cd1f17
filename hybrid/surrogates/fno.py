"""Fourier neural operator on a regular grid (1-D, 2-D, 3-D), as named blocks.

Tensor contract of :class:`FNO` (``d`` = 1, 2 or 3 grid dimensions):

    input  (B, C_in,  *grid)   channels: initial state, scenario parameters (constant
                               channels), grid coordinates, inside-domain mask
    output (B, C_out, *grid)   channels: the state at each output time t_1..t_T, then the
                               time-integrated flux density (d components) of each output
                               interval, then (heteroscedastic, ``variance_channels``)
                               the log-variance of each of those channels, from a
                               separate projection of the detached features

Blocks (as in Li et al., "Fourier neural operator for parametric PDEs", ICLR 2021, and
the neuraloperator package): lifting (pointwise MLP) → L × [spectral convolution (the
lowest ``modes`` Fourier modes per dimension, complex weights) + pointwise linear skip,
GELU] → projection (pointwise MLP). The grid is zero-padded by ``padding`` nodes per
dimension before the spectral layers, so non-periodic data is not forced periodic.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SpectralConv", "FNO"]


class SpectralConv(nn.Module):
    """y = IFFT(W · FFT(x)) on the lowest ``modes`` frequencies of each dimension.

    In more than one dimension, the non-last dimensions keep both their lowest positive
    and lowest negative frequencies (2^(d-1) corner blocks of weights).
    """

    def __init__(self, in_channels: int, out_channels: int, modes: tuple[int, ...]):
        super().__init__()
        self.modes = tuple(int(m) for m in modes)
        self.dim = len(self.modes)
        corners = 2 ** (self.dim - 1)
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.randn(corners, in_channels, out_channels,
                                                       *self.modes, dtype=torch.cfloat))

    def _corner_slices(self, shape: tuple[int, ...]):
        """Index slices of the kept frequency blocks of an rfftn output of ``shape``, as
        (corner, slices). A non-last axis of size 1 holds the zero frequency alone (the input
        is constant along it), which belongs to the low corner only: BOON evaluates a layer's
        response to inputs constant along the other axes on such reduced grids."""
        d = self.dim
        blocks = []
        for c in range(2 ** (d - 1)):
            idx = []
            for axis in range(d - 1):
                m = min(self.modes[axis], shape[axis])
                idx.append(slice(0, m) if not (c >> axis) & 1
                           else slice(shape[axis] - m, shape[axis]))
            if any(shape[axis] == 1 and (c >> axis) & 1 for axis in range(d - 1)):
                continue
            idx.append(slice(0, min(self.modes[-1], shape[-1])))
            blocks.append((c, tuple(idx)))
        return blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *grid) → (B, C_out, *grid): the kept frequencies times the weights, the
        others zero."""
        dims = tuple(range(-self.dim, 0))
        xf = torch.fft.rfftn(x, dim=dims)
        out = torch.zeros(x.shape[0], self.weight.shape[2], *xf.shape[2:], dtype=xf.dtype,
                          device=x.device)
        for c, idx in self._corner_slices(tuple(xf.shape[2:])):
            w = self.weight[c][(slice(None), slice(None))
                               + tuple(slice(0, s.stop - s.start) for s in idx)]
            out[(slice(None), slice(None)) + idx] = torch.einsum(
                "bi...,io...->bo...", xf[(slice(None), slice(None)) + idx], w)
        return torch.fft.irfftn(out, s=x.shape[-self.dim:], dim=dims)


class FNO(nn.Module):
    """Lifting → spectral layers → projection; see the module docstring for the contract."""

    def __init__(self, in_channels: int, out_channels: int, dim: int, modes: int = 16,
                 width: int = 32, layers: int = 4, padding: int = 8, variance_channels: int = 0):
        super().__init__()
        self.dim, self.padding = dim, padding
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
        self.lifting = nn.Sequential(conv(in_channels, 2 * width, 1), nn.GELU(),
                                     conv(2 * width, width, 1))
        self.spectral = nn.ModuleList(SpectralConv(width, width, (modes,) * dim)
                                      for _ in range(layers))
        self.skip = nn.ModuleList(conv(width, width, 1) for _ in range(layers))
        self.projection = nn.Sequential(conv(width, 2 * width, 1), nn.GELU(),
                                        conv(2 * width, out_channels, 1))
        self.activation = nn.GELU()
        # heteroscedastic heads: their own projection of the detached features, so that fitting the
        # variances never changes the mean's path (created last: the mean's initialisation is
        # unchanged)
        self.variance = (nn.Sequential(conv(width, 2 * width, 1), nn.GELU(),
                                       conv(2 * width, variance_channels, 1))
                         if variance_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *grid) → (B, C_out, *grid), the module docstring's contract."""
        h = self.lifting(x)
        if self.padding:
            h = nn.functional.pad(h, [0, self.padding] * self.dim)
        for i, (spectral, skip) in enumerate(zip(self.spectral, self.skip)):
            h = spectral(h) + skip(h)
            if i < len(self.spectral) - 1:
                h = self.activation(h)
        if self.padding:
            h = h[(Ellipsis,) + (slice(0, -self.padding),) * self.dim]
        if self.variance is None:
            return self.projection(h)
        return torch.cat([self.projection(h), self.variance(h.detach())], dim=1)

    @staticmethod
    def parameter_count(model: nn.Module) -> int:
        """Number of real parameters of ``model`` (a complex weight counts twice)."""
        return sum(math.prod(p.shape) * (2 if p.is_complex() else 1) for p in model.parameters())
