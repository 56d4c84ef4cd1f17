"""Training one ensemble member: deterministic, checkpointed, resumable.

Each member m has its own seed (from the case seed and m), so members differ by their
initialisation and mini-batch order (a deep ensemble, Lakshminarayanan et al. 2017).
The mini-batch order of epoch e is drawn from a generator seeded with (seed, m, e), so
a resumed run continues exactly as the uninterrupted one would have. Training runs with
one torch thread, which makes a member's result independent of how members are spread
over MPI ranks.

Loss: relative squared error of the states (volume-weighted) plus that of the face flux
densities (area-weighted), plus ``softc_weight`` × the PDE residual penalty (SoftC). With
heteroscedastic heads, plus the Gaussian negative log-likelihood of the targets under the
heads' variances. The heads project the detached features and see the detached mean, so
the mean is fitted exactly as without heads and the heads learn the size of what it
misses (Lakshminarayanan et al. 2017 fit both at once; measured here, sharing the trunk
made the diffusion-1d mean 10x worse).

An autoregressive member (:mod:`hybrid.surrogates.rollout`) trains on every (scenario,
step) pair instead, with noisy input states, and is validated by rolling out the
validation scenarios, so its validation error measures what a prediction does.

Checkpoints hold only tensors, numbers and strings, and load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hybrid.errors import CaseError
from hybrid.files import atomic_path
from hybrid.surrogates.config import ModelConfig
from hybrid.surrogates.data import Normaliser, SurrogateInputs, to_mesh_outputs, to_mesh_variances
from hybrid.surrogates.fno import FNO
from hybrid.surrogates.rollout import rollout, step_inputs, step_outputs, step_pairs

__all__ = ["TrainingSet", "MemberResult", "train_member", "load_checkpoint", "save_state",
           "member_seed", "build_model", "device"]


@dataclass
class TrainingSet:
    """Everything a member needs, identical on every rank."""

    transfer: object
    inputs: SurrogateInputs            # all training scenarios
    u: torch.Tensor                    # (S, T, N) float64 targets at t_1..t_T ((S, T, C N) for C
                                       # components)
    phi: torch.Tensor                  # (S, T, F) float64 flux-density targets
    volume: torch.Tensor               # (N,) (C components: (C N,), the volumes repeated)
    face_area: torch.Tensor            # (F,)
    face_normal: torch.Tensor          # (F, d)
    norm: Normaliser
    train_idx: np.ndarray
    val_idx: np.ndarray
    model_config: ModelConfig
    settings: dict                     # epochs, lr, batch, patience, softc_weight, checkpoint_every
    residual: Callable | None = None   # SoftC: (grid states (B, T, *grid), inputs) -> residual
                                       # tensor
    times: np.ndarray | None = None    # (T+1,) output times (an autoregressive member's steps)

    def to(self, device: torch.device) -> "TrainingSet":
        """The same set with its tensors on ``device`` (the transfer moves its operators itself)."""
        if device.type == "cpu":
            return self
        mv = lambda t: t.to(device)
        inputs = SurrogateInputs(mv(self.inputs.grid_inputs), mv(self.inputs.u0))
        return TrainingSet(self.transfer, inputs, mv(self.u), mv(self.phi), mv(self.volume),
                           mv(self.face_area), mv(self.face_normal), self.norm, self.train_idx,
                           self.val_idx, self.model_config, self.settings, self.residual,
                           self.times)


def device() -> torch.device:
    """CUDA when available, else the CPU: the same code runs on both."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class MemberResult:
    """What :func:`train_member` reports of one member.

    Attributes:
        member: the member's index.
        epochs_run: epochs in its history, those before a resume included.
        best_val: the lowest validation relative L2 of the states over its epochs (on the
            training scenarios when there is no validation scenario).
        history: [training loss, validation relative L2] of each epoch.
        resumed_from: the epoch its checkpoint resumed it at (0: trained from the start).
    """

    member: int
    epochs_run: int
    best_val: float
    history: list
    resumed_from: int


def member_seed(seed: int, member: int) -> int:
    """Member ``member``'s seed: 48 bits of a SHA-256 of the case seed and the index."""
    digest = hashlib.sha256(f"hybrid-surrogate:{seed}:{member}".encode()).hexdigest()
    return int(digest[:12], 16)


def build_model(config: ModelConfig | dict) -> FNO:
    """The untrained network of a config (a checkpoint's dict is read by
    :meth:`ModelConfig.from_dict`)."""
    return (config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)).build()


def variance_nll(data: TrainingSet, output: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """Mean Gaussian NLL (up to a constant) of the targets under the heads' variances, in
    normalised units, states volume-weighted and fluxes area-weighted; the mean is detached."""
    T = data.u.shape[1]
    C = data.model_config.components
    with torch.no_grad():
        u_pred, phi_pred = to_mesh_outputs(data.transfer, output, data.inputs.u0[idx], data.norm, T,
                                           data.face_normal, C)
    var_u, var_phi = to_mesh_variances(data.transfer, output, data.norm, T, data.face_normal, C)
    su, sf = data.norm.du_std ** 2, data.norm.flux_std ** 2
    vol = data.volume.to(var_u.dtype) / data.volume.sum()
    area = data.face_area.to(var_phi.dtype) / data.face_area.sum()
    nll_u = (((u_pred - data.u[idx]) ** 2 / var_u + torch.log(var_u / su)) * vol).sum(-1).mean()
    nll_f = (((phi_pred - data.phi[idx]) ** 2 / var_phi + torch.log(var_phi / sf))
             * area).sum(-1).mean()
    return 0.5 * (nll_u + nll_f)


def relative_errors(data: TrainingSet, output: torch.Tensor,
                    idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(states', flux densities') relative squared errors of a one-shot output, per scenario."""
    T = data.u.shape[1]
    u_pred, phi_pred = to_mesh_outputs(data.transfer, output, data.inputs.u0[idx], data.norm, T,
                                       data.face_normal, data.model_config.components)
    return (_relative_squared(u_pred, data.u[idx], data.volume.to(u_pred.dtype)),
            _relative_squared(phi_pred, data.phi[idx], data.face_area.to(phi_pred.dtype)))


def _relative_squared(pred: torch.Tensor, true: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ w (pred − true)² / Σ w true² over times and entries (B, T, n), per scenario."""
    return (((pred - true) ** 2 * weight).sum(dim=(1, 2))
            / ((true ** 2 * weight).sum(dim=(1, 2)) + 1e-30))


def _optimiser_step(opt, loss: torch.Tensor, losses: list[float]) -> None:
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(float(loss.detach()))


def _shots_epoch(data: TrainingSet, model, opt, gen: torch.Generator) -> list[float]:
    """One epoch of a one-shot member: mini-batches of scenarios in ``gen``'s order (a CPU
    generator: the same order on any device); the loss of the module docstring."""
    s = data.settings
    order = data.train_idx[torch.randperm(len(data.train_idx), generator=gen).numpy()]
    losses = []
    for b in range(0, len(order), s["batch"]):
        idx = order[b:b + s["batch"]]
        out = model(data.inputs.grid_inputs[idx])
        eu, ephi = relative_errors(data, out, idx)
        loss = (eu + ephi).mean()
        if s["softc_weight"] > 0 and data.residual is not None:
            loss = loss + s["softc_weight"] * data.residual(out, idx)
        if data.model_config.heteroscedastic:
            loss = loss + variance_nll(data, out, idx)
        _optimiser_step(opt, loss, losses)
    return losses


def _true_states(data: TrainingSet, idx) -> torch.Tensor:
    """(B, T+1, C N) the solver's states of scenarios ``idx``, t_0 included."""
    return torch.cat([data.inputs.u0[idx][:, None], data.u[idx]], dim=1)


def _steps_epoch(data: TrainingSet, model, opt, gen: torch.Generator) -> list[float]:
    """One epoch of an autoregressive member (:mod:`hybrid.surrogates.rollout`): mini-batches
    of (scenario, step) pairs in ``gen``'s order, each input state with its training noise
    drawn from ``gen`` too, so the epoch is the same on any device and after a resume. The
    loss is the step's squared error of the state (volume-weighted) plus that of the flux
    density (area-weighted), each over the step's own increment and flux (``rollout_loss``
    relative) or over the increments' and fluxes' typical sizes du_std and flux_std (scaled).
    Measured on wave-1d (two levels, 8 epochs of one member): relative 1.68 rollout validation
    relative L2, scaled 0.047, since a standing wave's increments vanish where it turns and
    those steps dominate a relative loss; on stefan-1d 0.0265 against 0.0233."""
    T = data.u.shape[1]
    C = data.model_config.components
    pairs = step_pairs(data.train_idx, T)
    pairs = pairs[torch.randperm(len(pairs), generator=gen).numpy()]
    times = torch.as_tensor(data.times, device=data.u.device)
    vol, area = data.volume.to(data.u.dtype), data.face_area.to(data.phi.dtype)
    noise = float(data.settings["rollout_noise"]) * data.norm.du_std
    # scaled: every step's error over the same typical sizes (None: each step's own)
    u_scale, phi_scale = ((data.norm.du_std ** 2 * vol.sum(), data.norm.flux_std ** 2 * area.sum())
                          if data.settings["rollout_loss"] == "scaled" else (None, None))
    losses = []
    for b in range(0, len(pairs), data.settings["batch"]):
        s, k = pairs[b:b + data.settings["batch"]].T
        states = _true_states(data, s)
        start, target = states[np.arange(len(s)), k], states[np.arange(len(s)), k + 1]
        noisy = start + torch.randn(start.shape, generator=gen,
                                    dtype=start.dtype).to(start.device) * noise
        last = None
        if data.model_config.history == 2:   # the last increment, from the noisy state: a
            # rollout's error at t_n is in both (zero before the first step)
            before = states[np.arange(len(s)), np.maximum(k - 1, 0)]
            last = torch.where(torch.as_tensor(k > 0, device=noisy.device)[:, None],
                               noisy - before, torch.zeros_like(noisy))
        x = step_inputs(data.transfer, noisy, data.inputs.grid_inputs[s], times[k],
                        float(data.times[-1]), data.norm, C, last)
        u_pred, phi_pred = step_outputs(data.transfer, model(x), noisy, data.norm,
                                        data.face_normal, C)
        phi_true = data.phi[s, k]
        eu = ((u_pred - target) ** 2 * vol).sum(-1) / (
            u_scale if u_scale is not None else
            ((target - start) ** 2 * vol).sum(-1) + 1e-12 * (target ** 2 * vol).sum(-1) + 1e-30)
        ephi = ((phi_pred - phi_true) ** 2 * area).sum(-1) / (
            phi_scale if phi_scale is not None else (phi_true ** 2 * area).sum(-1) + 1e-30)
        _optimiser_step(opt, (eu + ephi).mean(), losses)
    return losses


def _rollout_errors(data: TrainingSet, model, idx: np.ndarray) -> torch.Tensor:
    """Relative squared error of the rolled-out states of scenarios ``idx`` (volume-weighted,
    over t_1..t_T), as :func:`relative_errors` measures a one-shot member's."""
    u_pred, _ = rollout(model, data.transfer, data.inputs.grid_inputs[idx], data.inputs.u0[idx],
                        data.times, data.norm, data.face_normal, data.model_config.components,
                        data.model_config.history)
    return _relative_squared(u_pred, data.u[idx], data.volume.to(u_pred.dtype))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely; a corrupt file is a clear error, never unpickled code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise CaseError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
                        f"delete it or run with --force") from None


def save_state(path: Path, state: dict, immediate: bool = False) -> None:
    """``torch.save`` through memory, then one plain write: a full disk is an OSError naming
    the file (torch's own writer reports it as an unexplained RuntimeError). ``immediate``:
    in place at once, not at the stage's end (checkpoints)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path, immediate=immediate) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def train_member(data: TrainingSet, member: int, seed: int, digest: str, checkpoint: Path,
                 on_epoch: Callable[[int, float, float], None] | None = None
                 ) -> tuple[MemberResult, dict]:
    """Train (or resume) member ``member``; returns its result and best weights."""
    s = data.settings
    dev = device()
    data = data.to(dev)
    torch.manual_seed(member_seed(seed, member))
    model = build_model(data.model_config).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s["epochs"],
                                                       eta_min=s["lr"] * 0.01)
    start, best_val, bad, history, resumed_from = 0, math.inf, 0, [], 0
    best_state = copy.deepcopy(model.state_dict())
    if checkpoint.exists():
        state = load_checkpoint(checkpoint, dev)
        if state.get("digest") == digest and state.get("member") == member:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            best_state = state["best_model"]
            start = int(state["epoch"])
            best_val, bad = float(state["best_val"]), int(state["bad_epochs"])
            history = [list(h) for h in state["history"].tolist()] if len(state["history"]) else []
            resumed_from = start
    stopped = bad >= s["patience"]
    epoch = start
    for epoch in range(start, s["epochs"]):
        if stopped:
            break
        model.train()
        gen = torch.Generator().manual_seed(member_seed(seed, member) + 7919 * (epoch + 1))
        epoch_of = _steps_epoch if data.model_config.autoregressive else _shots_epoch
        losses = epoch_of(data, model, opt, gen)
        sched.step()
        model.eval()
        with torch.no_grad():
            idx = data.val_idx if len(data.val_idx) else data.train_idx
            if data.model_config.autoregressive:
                eu = _rollout_errors(data, model, idx)
            else:
                eu, ephi = relative_errors(data, model(data.inputs.grid_inputs[idx]), idx)
            val = float(torch.sqrt(eu).mean())
        train_loss = float(np.mean(losses))
        history.append([train_loss, val])
        if val < best_val:
            best_val, bad = val, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        stopped = bad >= s["patience"]
        done = epoch + 1
        if done % s["checkpoint_every"] == 0 or done == s["epochs"] or stopped:
            save_state(checkpoint, {"digest": digest, "member": member, "epoch": done,
                                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "scheduler": sched.state_dict(), "best_model": best_state,
                                    "best_val": best_val, "bad_epochs": bad,
                                    "history": torch.tensor(history, dtype=torch.float64)},
                       immediate=True)   # a killed run resumes from it: in place at once
        if on_epoch:
            on_epoch(done, train_loss, val)
    epochs_run = len(history)
    best_state = {k: v.detach().cpu() for k, v in best_state.items()}
    return MemberResult(member, epochs_run, best_val, history, resumed_from), best_state
