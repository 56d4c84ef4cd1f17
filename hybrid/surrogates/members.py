"""The trained ensembles of a case: which ones it trains, which one predicts, loading them.

A case trains its main ensemble in ``OUTPUT/train/``; under ``[surrogate] time = "select"``
an autoregressive one beside it in ``OUTPUT/train/autoregressive/`` (:func:`chosen_members`
picks the one that predicts) and, where test scenarios lie outside the training span, each
kind's edge probe in ``edge/`` below its folder (:func:`edge_probes`); and one ensemble per
baseline that ``[constraints] compare`` names (:func:`baseline_ensembles`: SoftC, BOON, the
unpadded FNO) in ``OUTPUT/train/<variant>/``. :func:`load_members` reads finished members back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybrid.case.sections import TRAIN_SECTIONS
from hybrid.errors import CaseError
from hybrid.surrogates.config import ModelConfig
from hybrid.surrogates.data import Normaliser
from hybrid.surrogates.training import load_checkpoint

__all__ = ["SOFTC_DEFAULT_WEIGHT", "wants_softc", "softc_weight", "BaselineEnsemble",
           "baseline_ensembles", "main_penalty", "autoregressive", "selects_time", "check_time",
           "ChosenMembers", "chosen_members", "choose_by_validation", "mean_validation",
           "PROBE_MEMBERS", "edge_probes", "ensemble_folders", "load_members"]

# the SoftC baseline's penalty weight when [surrogate] softc_weight is 0: on stefan-1d's test
# scenarios weights 1 / 0.1 / 0.01 gave relative L2 0.167 / 0.106 / 0.099 against 0.114 without
# the penalty
SOFTC_DEFAULT_WEIGHT = 0.01


def wants_softc(case) -> bool:
    """The case compares against SoftC: a second ensemble, trained with the PDE-residual
    penalty, in ``OUTPUT/train/softc``."""
    return "softc" in case.constraints["compare"]


def softc_weight(case) -> float:
    """The SoftC ensemble's penalty weight: ``[surrogate] softc_weight``, or
    SOFTC_DEFAULT_WEIGHT where that is 0."""
    return float(case.surrogate["softc_weight"]) or SOFTC_DEFAULT_WEIGHT


@dataclass(frozen=True)
class BaselineEnsemble:
    """An ensemble a case compares against (a name of ``[constraints] compare``), trained
    beside the main one in ``OUTPUT/train/<variant>`` and scored unconstrained.

    Attributes:
        variant: its name in ``compare``, ``predictions.h5`` and ``variants.h5``.
        label: how the train stage's lines name it.
        suffix: its checkpoints' digest is the main ensemble's plus this.
        penalty: its PDE-residual penalty weight (SoftC).
        boon: BOON's boundary-corrected layers.
        padded: the zero padding of non-periodic grids (False: BOON's published FNO1d, which
            declares a padding and never applies it).
    """

    variant: str
    label: str
    suffix: str
    penalty: float = 0.0
    boon: bool = False
    padded: bool = True


def baseline_ensembles(case) -> list[BaselineEnsemble]:
    """The ensembles ``[constraints] compare`` asks for besides the main one: SoftC (the PDE
    residual as a penalty), BOON and the unpadded FNO, in that order."""
    compare = case.constraints["compare"]
    out = []
    if wants_softc(case):
        out.append(BaselineEnsemble("softc", "SoftC ", f"+softc{softc_weight(case):g}",
                                    penalty=softc_weight(case)))
    if "boon" in compare:
        out.append(BaselineEnsemble("boon", "BOON ", "+boon", boon=True))
    if "unpadded" in compare:
        out.append(BaselineEnsemble("unpadded", "unpadded FNO ", "+unpadded", padded=False))
    return out


def main_penalty(case) -> float:
    """The main ensemble's residual-penalty weight: ``softc_weight``, unless SoftC is its own
    variant (then the SoftC ensemble has it and the main one none)."""
    return 0.0 if wants_softc(case) else float(case.surrogate["softc_weight"])


def autoregressive(case) -> bool:
    """The main ensemble steps t_n → t_{n+1} (``[surrogate] time = "autoregressive"``)."""
    return case.surrogate["time"] == "autoregressive"


def selects_time(case) -> bool:
    """``[surrogate] time = "select"``: a one-shot and an autoregressive ensemble are both
    trained, and the one with the lower validation error predicts (:func:`chosen_members`)."""
    return case.surrogate["time"] == "select"


def check_time(case) -> None:
    """An autoregressive ensemble has no per-output variance heads and no residual penalty
    (both are built for one-shot outputs): refused with the key that asks for one. The SoftC
    and BOON ensembles a case compares against stay one-shot, as their papers built them."""
    if not (autoregressive(case) or selects_time(case)):
        return
    for key, clash, what in (("surrogate.heteroscedastic", case.surrogate["heteroscedastic"],
                              "heteroscedastic heads"),
                             ("surrogate.softc_weight", main_penalty(case) > 0,
                              "a PDE-residual penalty")):
        if clash:
            raise CaseError(f'{what} need one-shot members, but [surrogate] time = '
                            f'"{case.surrogate["time"]}"',
                            file=str(case.display_file), key=key)


@dataclass(frozen=True)
class ChosenMembers:
    """The ensemble that predicts: its folder, its checkpoints' digest, how it treats time,
    and (``time = "select"``) the mean validation relative L2 of each candidate; where test
    scenarios lie outside the training span, also each kind's edge probes' mean relative L2
    on the edge scenarios (:func:`~hybrid.surrogates.data.edge_split`) and that error's weight
    in the choice."""

    folder: Path
    digest: str
    time: str
    validation: dict | None = None
    edge: dict | None = None
    edge_weight: float = 0.0

    def score(self, time_: str) -> float:
        """What the choice compares for ``time_``: (1 - w) × validation + w × edge."""
        if not self.edge:
            return self.validation[time_]
        return (1 - self.edge_weight) * self.validation[time_] + self.edge_weight * self.edge[time_]


# members of each kind's edge probe (time = "select" with test scenarios outside the span): a
# fixed number, so the choice does not depend on the ranks
PROBE_MEMBERS = 2


def edge_probes(case, train_dir: Path) -> tuple:
    """(the edge split, the probes' folders by kind) under ``time = "select"`` where the test
    leaves the training span: ``train/edge`` and ``train/autoregressive/edge``; (None, {})
    otherwise (:func:`~hybrid.surrogates.data.edge_split`)."""
    from hybrid.surrogates.data import edge_split

    split = edge_split(case) if selects_time(case) else None
    if split is None:
        return None, {}
    return split, {"one-shot": train_dir / "edge",
                   "autoregressive": train_dir / "autoregressive" / "edge"}


def chosen_members(case, train_dir: Path) -> ChosenMembers:
    """The main ensemble of a trained case. Under ``time = "select"`` the one-shot (in
    ``train/``) or the autoregressive one (``train/autoregressive/``), whichever has the lower
    mean over its members of the best validation relative L2 (validation scenarios only; a tie
    keeps one-shot), mixed with the edge probes' error where test scenarios lie outside the
    training span (:meth:`ChosenMembers.score`)."""
    digest = case.hash(*TRAIN_SECTIONS)
    if not selects_time(case):
        return ChosenMembers(train_dir, digest, case.surrogate["time"])
    read = lambda folder: mean_validation(json.loads((folder / "stage.json").read_text())
                                          ["members"])
    scores = {time_: read(folder) for time_, folder in (("one-shot", train_dir),
                                                        ("autoregressive",
                                                         train_dir / "autoregressive"))}
    split, probes = edge_probes(case, train_dir)
    edge = {time_: read(folder) for time_, folder in probes.items()} or None
    return choose_by_validation(train_dir, digest, scores, edge, split.weight if edge else 0.0)


def mean_validation(members: dict) -> float:
    """The mean over an ensemble's member summaries (``stage.json``'s ``members``) of their best
    validation relative L2."""
    return float(np.mean([m["best_validation_rel_l2"] for m in members.values()]))


def choose_by_validation(train_dir: Path, digest: str, scores: dict, edge: dict | None = None,
                         weight: float = 0.0) -> ChosenMembers:
    """Under ``time = "select"``: the autoregressive ensemble when its score (mean validation
    relative L2 ``scores``, mixed with the edge probes' ``edge`` at ``weight``: see
    :meth:`ChosenMembers.score`) is lower than the one-shot one's, else the one-shot ensemble."""
    one_shot = ChosenMembers(train_dir, digest, "one-shot", scores, edge, weight)
    if one_shot.score("autoregressive") < one_shot.score("one-shot"):
        return ChosenMembers(train_dir / "autoregressive", f"{digest}+autoregressive",
                             "autoregressive", scores, edge, weight)
    return one_shot


def ensemble_folders(case, train_dir: Path) -> list[Path]:
    """Every ensemble's folder the train stage writes for this case, in its order: the main
    one, the autoregressive one under ``time = "select"`` and the edge probes, then the
    compared ensembles'."""
    return ([train_dir] + ([train_dir / "autoregressive"] if selects_time(case) else [])
            + list(edge_probes(case, train_dir)[1].values())
            + [train_dir / b.variant for b in baseline_ensembles(case)])


def load_members(out: Path, M: int, members: list[int], digest: str | None = None) -> dict:
    """Load finished members safely (weights_only); each rebuilds the network its checkpoint
    records (:class:`~hybrid.surrogates.config.ModelConfig`); a mismatched file is a clear error."""
    loaded = {}
    for m in members:
        path = out / f"member-{m}.pt"
        state = load_checkpoint(path)
        if digest is not None and state.get("digest") != digest:
            raise CaseError(f"{path} was trained for other case settings; run hybrid train --force")
        try:
            config = ModelConfig.from_dict(state["config"])
        except (TypeError, ValueError) as exc:
            raise CaseError(f"{path}: {exc}; run hybrid train --force") from None
        model = config.build()
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CaseError(f"{path} does not match the model configuration: {exc}") from None
        model.eval()
        loaded[m] = (model, config, Normaliser.from_state(state["normaliser"]))
    return loaded
