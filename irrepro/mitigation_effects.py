"""What each mitigation (and each other activation) does against the same configuration
without one: the ratio of their PD and the difference of their loss, each with its 95%
interval over seeds and test examples (paired by seed where they share seeds), a p-value of
equal PD adjusted (Holm) over the study."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from irrepro import uncertainty
from irrepro.analysis import (
    Group,
    config_columns,
    example_losses,
    has_teacher,
    markdown_table,
    with_interval,
)
from irrepro.comparisons import PairPD, compare_pd
from irrepro.config import is_mitigation_key, mitigation_label
from irrepro.summary_schema import varying

MEASURES = ("mitigation", "runs", "pd", "pd_none", "ratio", "ratio_low", "ratio_high",
            "p_value", "p_adjusted", "loss", "loss_none", "loss_difference",
            "loss_difference_low", "loss_difference_high")


def mitigation_effects(groups: list[Group]) -> pd.DataFrame:
    """In a study with mitigations, one row per group that differs from a plain group (no
    mitigation, the activation most groups of its configuration use) only in its mitigation
    or its activation: the other config values that vary, then MEASURES, in the order of the
    mitigations' names and strengths. Empty (with those columns) where there is none.

    The loss is the excess log loss where every group has a teacher, else the log loss.
    """
    columns = [config_columns(group) for group in groups]
    if not any(is_mitigation_key(key) for column in columns for key in column):
        groups, columns = [], []  # a study without mitigations: no table
    strata: dict[tuple, list[tuple[Group, dict[str, Any]]]] = {}
    for group, column in zip(groups, columns, strict=True):
        strata.setdefault(_stratum(column), []).append((group, column))
    excess = all(has_teacher(group) for group in groups)
    others = [key for key in varying(pd.DataFrame(columns)) if not _is_arm_key(key)]
    rows = []
    for index, members in enumerate(strata.values()):
        reference = _reference(members)
        if reference is None:
            continue
        for group, column in members:
            if group is reference or min(len(group.seeds), len(reference.seeds)) < \
                    uncertainty.MIN_SEEDS[True]:
                continue
            rows.append({**_row(group, column, reference, others, excess), "stratum": index})
    frame = pd.DataFrame(rows, columns=None if rows else [*others, *MEASURES, "order", "stratum"])
    frame = frame.sort_values(["stratum", "order"], kind="stable")
    frame = frame.drop(columns=["stratum", "order"])
    frame = frame.reset_index(drop=True)
    frame["p_adjusted"] = uncertainty.holm(frame["p_value"].to_numpy(dtype=np.float64))
    frame.attrs["loss"] = "excess log loss" if excess else "log loss"
    return frame


def _is_arm_key(key: str) -> bool:
    return is_mitigation_key(key) or key.startswith("activation.")


def _stratum(column: dict[str, Any]) -> tuple:
    return tuple(sorted((key, repr(value)) for key, value in column.items()
                        if not _is_arm_key(key)))


def _reference(members: list[tuple[Group, dict[str, Any]]]) -> Group | None:
    """The plain group of a configuration: no mitigation, and the activation that most of
    its groups use."""
    activations = Counter(column.get("activation.name") for _, column in members)
    common = activations.most_common(1)[0][0]
    for group, column in members:
        if column.get("activation.name") == common and not any(map(is_mitigation_key, column)):
            return group
    return None


def _row(group: Group, column: dict[str, Any], reference: Group, others: list[str],
         excess: bool) -> dict[str, Any]:
    label = mitigation_label(column)
    activation = column.get("activation.name")
    if activation != reference.config.activation.name:
        label = f"activation {activation}" + ("" if label == "none" else f", {label}")
    pd_result = compare_pd(group, reference, {g.key: PairPD(g) for g in (group, reference)})
    loss = _loss_difference(group, reference, excess)
    name = column.get("mitigation.name", "")
    strength = column.get("mitigation.weight", column.get("mitigation.decay",
                          column.get("optimizer.weight_decay", 0)))
    return {
        **{key: column.get(key) for key in others},
        "mitigation": label,
        "runs": f"{len(group.seeds)}/{len(reference.seeds)}",
        "pd": pd_result.a, "pd_none": pd_result.b, "ratio": pd_result.ratio,
        "ratio_low": pd_result.ratio_low, "ratio_high": pd_result.ratio_high,
        "p_value": pd_result.p_value, "p_adjusted": np.nan,
        "loss": loss.a, "loss_none": loss.b, "loss_difference": loss.difference,
        "loss_difference_low": loss.difference_low,
        "loss_difference_high": loss.difference_high,
        "order": (_ORDER.index(name) if name in _ORDER else len(_ORDER), label, strength),
    }


# Rows in this order of mitigation names (activations and weight decay first).
_ORDER = ("", "ensemble", "min_entropy", "codistill", "anchor", "ema")


def _loss_difference(group: Group, reference: Group, excess: bool) -> uncertainty.Comparison:
    """Mean (excess) log loss of group against reference, paired by seed on the seeds both
    have when they share 2 or more, else unpaired."""
    dataset = group.dataset
    common = sorted(set(group.seeds) & set(reference.seeds))
    paired = len(common) >= uncertainty.MIN_SEEDS[False]

    def losses(g: Group) -> np.ndarray:
        """The group's per-example losses, on the shared seeds in order when paired."""
        P = g.predictions[[g.seeds.index(seed) for seed in common]] if paired else g.predictions
        return example_losses(P, dataset, excess)

    return uncertainty.compare_runs(losses(group), losses(reference), paired)


def markdown(frame: pd.DataFrame, study: str) -> str:
    """mitigations.md: how to read it, then the table."""
    loss = frame.attrs.get("loss", "excess log loss")
    others = [c for c in frame.columns if c not in MEASURES]
    table = frame[others].copy()
    table["mitigation"] = frame["mitigation"]
    table["runs"] = frame["runs"]
    table["PD"] = frame["pd"]
    table["PD without"] = frame["pd_none"]
    table["PD ratio [95% CI]"] = [with_interval(*v) for v in zip(
        frame["ratio"], frame["ratio_low"], frame["ratio_high"], strict=True)]
    table["p (Holm)"] = frame["p_adjusted"]
    table[f"{loss} change [95% CI]"] = [with_interval(*v) for v in zip(
        frame["loss_difference"], frame["loss_difference_low"], frame["loss_difference_high"],
        strict=True)]
    reduced = int(((frame["p_adjusted"] < 0.05) & (frame["ratio"] < 1)).sum()) if len(frame) else 0
    return (f"# {study}: what each mitigation changes\n\nEach mitigation against the same "
            "configuration without one: PD ratio and the change in "
            f"{loss}, with 95% intervals over seeds and test examples (paired by seed); "
            "p (Holm): test of equal PD, adjusted over these rows. "
            f"{reduced} of {len(frame)} reduce PD at 5% after "
            "adjustment.\n\n"
            + (markdown_table(table) if len(frame) else "No group has a mitigation.\n"))
