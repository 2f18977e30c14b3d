"""Comparisons between a study's groups: for each config key that varies, every pair of its
levels whose groups are otherwise equal, with the ratio and difference of their PD, each with
its 95% interval, and a p-value of equal PD, adjusted (Holm) over the study.

Groups trained on the same data and on 3 or more of the same seeds are compared paired by
seed, on the seeds they share (the same seed gives both arms the same random streams); the
others unpaired (seeds they share in ones or twos are then taken as independent). See
`irrepro.uncertainty.compare`.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from irrepro import uncertainty
from irrepro.analysis import Group, config_columns, markdown_table, with_interval
from irrepro.summary_schema import levels, varying

MEASURES = ("factor", "level_a", "level_b", "runs_a", "runs_b", "pd_a", "pd_b", "ratio",
            "ratio_low", "ratio_high", "difference", "difference_low", "difference_high",
            "p_value", "p_adjusted", "paired")


# Keys a run omits at their default, so that runs logged before the keys existed keep their
# identities; where other groups of a study set them, they are compared as that default.
OMITTED_DEFAULTS = {"randomness.fork_step": 0, "model.dropout": 0.0}


class PairPD:
    """A group's per-example PD of every pair of its runs [N, R, R], and its Sample."""

    def __init__(self, group: Group):
        self.values = np.concatenate(list(uncertainty.pair_values(group.predictions, "pd")))
        self.sample = uncertainty.sample([self.values])


def compare_pd(a: Group, b: Group, pair_pd: dict[str, PairPD]
               ) -> uncertainty.Comparison | None:
    """PD of group a against group b, from `pair_pd` by group key; None where either has too
    few seeds."""
    common = sorted(set(a.seeds) & set(b.seeds))
    minimum = uncertainty.MIN_SEEDS[True]
    if len(common) >= minimum and a.config.data == b.config.data:
        arms = []
        for group in (a, b):
            rows = [group.seeds.index(seed) for seed in common]
            if len(rows) == len(group.seeds):
                arms.append((pair_pd[group.key].values, pair_pd[group.key].sample))
            else:
                values = pair_pd[group.key].values[:, rows][:, :, rows]
                arms.append((values, uncertainty.sample([values])))
        (A, sample_a), (B, sample_b) = arms
        return uncertainty.compare(sample_a, sample_b, paired=True,
                                   cross_same=uncertainty.cross_products([A], [B]))
    if min(len(a.seeds), len(b.seeds)) < minimum:
        return None
    return uncertainty.compare(pair_pd[a.key].sample, pair_pd[b.key].sample, paired=False,
                               shared_examples=a.config.data == b.config.data)


def comparisons(groups: list[Group]) -> pd.DataFrame:
    """One row per compared pair of levels: the other config values that vary, then
    MEASURES. Empty (with those columns) where nothing can be compared."""
    columns = [config_columns(group) for group in groups]
    for key, default in OMITTED_DEFAULTS.items():  # compared as that default, where set
        if any(key in column for column in columns):
            for column in columns:
                column.setdefault(key, default)
    factors = varying(pd.DataFrame(columns))
    rows = []
    for factor in factors:
        others = [key for key in factors if key != factor]
        order = levels(pd.Series([c.get(factor) for c in columns], name=factor, dtype=object))
        matched: dict[tuple, list[tuple[Group, dict[str, Any]]]] = {}
        for group, column in zip(groups, columns, strict=True):
            if column.get(factor) in order:
                key = tuple(repr(column.get(other)) for other in others)
                matched.setdefault(key, []).append((group, column))
        for members in matched.values():
            members.sort(key=lambda member: order.index(member[1][factor]))
            # each group's pair values once per set of otherwise equal groups
            pair_pd = {g.key: PairPD(g) for g, _ in members if len(g.seeds) >= 2}
            for (a, column_a), (b, column_b) in itertools.combinations(members, 2):
                result = compare_pd(a, b, pair_pd)
                if result is not None:
                    rows.append(_row(factor, others, a, b, column_a, column_b, result))
    frame = pd.DataFrame(rows, columns=None if rows else list(MEASURES))
    frame = frame[[c for c in frame.columns if c not in MEASURES] + list(MEASURES)]
    frame["p_adjusted"] = uncertainty.holm(frame["p_value"].to_numpy(dtype=np.float64))
    return frame


def _row(factor, others, a, b, column_a, column_b, result) -> dict[str, Any]:
    runs = len(set(a.seeds) & set(b.seeds)) if result.paired else None
    return {
        **{other: column_a.get(other) for other in others},
        "factor": factor, "level_a": column_a[factor], "level_b": column_b[factor],
        "runs_a": runs or len(a.seeds), "runs_b": runs or len(b.seeds),
        "pd_a": result.a, "pd_b": result.b, "ratio": result.ratio,
        "ratio_low": result.ratio_low, "ratio_high": result.ratio_high,
        "difference": result.difference, "difference_low": result.difference_low,
        "difference_high": result.difference_high, "p_value": result.p_value,
        "p_adjusted": np.nan, "paired": result.paired,
    }


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns people read: the other config values, the comparison, PD of both arms, the
    ratio and the difference with their 95% intervals, p-values, pairing."""
    others = [c for c in frame.columns if c not in MEASURES]
    table = frame[others].copy()
    table["comparison"] = [f"{f.rsplit('.', 1)[-1] if not f.endswith('.name') else f[:-5]}: "
                           f"{a} vs {b}" for f, a, b in
                           zip(frame["factor"], frame["level_a"], frame["level_b"], strict=True)]
    table["runs"] = [f"{a}/{b}" for a, b in zip(frame["runs_a"], frame["runs_b"], strict=True)]
    table["PD a"], table["PD b"] = frame["pd_a"], frame["pd_b"]
    table["ratio a/b [95% CI]"] = [with_interval(*v) for v in zip(
        frame["ratio"], frame["ratio_low"], frame["ratio_high"], strict=True)]
    table["difference a-b [95% CI]"] = [with_interval(*v) for v in zip(
        frame["difference"], frame["difference_low"], frame["difference_high"], strict=True)]
    table["p"] = frame["p_value"]
    table["p (Holm)"] = frame["p_adjusted"]
    table["paired"] = frame["paired"].map({True: "yes", False: "no"})
    return table


def markdown(frame: pd.DataFrame, study: str) -> str:
    """comparisons.md: what is compared and how, then the table."""
    significant = int((frame["p_adjusted"] < 0.05).sum()) if len(frame) else 0
    return (f"# {study}: comparisons\n\n{len(frame)} comparisons of PD between groups that "
            "differ in one config value; ratio and difference with 95% intervals over seeds "
            "and test examples; p: two-sided test of equal PD, p (Holm): adjusted over the "
            f"study's comparisons. {significant} differ at 5% after adjustment.\n\n"
            + (markdown_table(readable(frame)) if len(frame) else "Nothing to compare.\n"))


def select(frame: pd.DataFrame, factor: str, level_a: str, level_b: str) -> pd.DataFrame:
    """The rows comparing level_a with level_b of factor (levels as text), oriented a vs b."""
    if len(frame) == 0 or factor not in set(frame["factor"]):
        known = sorted(set(frame["factor"])) if len(frame) else []
        raise ValueError(f"no comparison of {factor!r}; compared keys: {known or 'none'}")
    rows = frame[frame["factor"] == factor]
    text_a, text_b = rows["level_a"].map(_text), rows["level_b"].map(_text)
    forward = rows[(text_a == level_a) & (text_b == level_b)]
    backward = rows[(text_a == level_b) & (text_b == level_a)]
    if len(forward) + len(backward) == 0:
        present = sorted(set(text_a) | set(text_b))
        raise ValueError(f"{factor} has no comparison of {level_a} with {level_b}; "
                         f"its levels: {', '.join(present)}")
    return pd.concat([forward, backward.apply(_reversed, axis=1)], ignore_index=True)


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _reversed(row: pd.Series) -> pd.Series:
    row = row.copy()
    row["level_a"], row["level_b"] = row["level_b"], row["level_a"]
    row["runs_a"], row["runs_b"] = row["runs_b"], row["runs_a"]
    row["pd_a"], row["pd_b"] = row["pd_b"], row["pd_a"]
    row["ratio"], row["ratio_low"], row["ratio_high"] = (
        1 / row["ratio"], 1 / row["ratio_high"], 1 / row["ratio_low"])
    row["difference"], row["difference_low"], row["difference_high"] = (
        -row["difference"], -row["difference_high"], -row["difference_low"])
    return row


def describe(path, factor: str, level_a: str, level_b: str) -> str:
    """The comparisons.csv rows of level_a with level_b of factor, a line each."""
    rows = select(pd.read_csv(path), factor, level_a, level_b)
    others = [c for c in rows.columns if c not in MEASURES]
    lines = []
    for _, row in rows.iterrows():
        where = ", ".join(f"{k}={_text(row[k])}" for k in others if not pd.isna(row[k]))
        lines.append(
            f"{factor}: {level_a} vs {level_b}{f' ({where})' if where else ''}: "
            f"PD {row['pd_a']:.3g} vs {row['pd_b']:.3g}, "
            f"ratio {with_interval(*row[['ratio', 'ratio_low', 'ratio_high']])}, "
            f"difference "
            f"{with_interval(*row[['difference', 'difference_low', 'difference_high']])}, "
            f"p = {row['p_value']:.3g} (Holm {row['p_adjusted']:.3g}), "
            f"{'paired' if row['paired'] else 'unpaired'}, {row['runs_a']}/{row['runs_b']} seeds")
    return "\n".join(lines)
