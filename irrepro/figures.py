"""Figures of a study's analysis: PD against activation, window, size, quality and ensembles.

Config columns are the dotted ones (``activation.name``, ``randomness.window``, ...). A
figure draws one series per combination of the config values that vary over its data,
except the ones it plots against. Groups without a PD (fewer than 2 runs) are left out.
Every figure function returns the path it wrote, or None when the data cannot support it
(too few values to draw against); one with more series than a legend holds becomes small
multiples, one panel per value of a study factor. Groups that did not converge (summary
column ``converged``) are drawn hollow or hatched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from irrepro import parallel
from irrepro.config import is_mitigation_key, mitigation_label
from irrepro.summary_schema import EXCESS_LOSS, LOSS, levels, loss_label, reported_loss, varying

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator  # noqa: E402

PD_LABEL = r"PD, mean $|p_i - p_j|$"
# At most this many series share a panel; more become small multiples.
MAX_SERIES = 10
# Factors that make the panels of small multiples, in order of preference.
PANEL_ORDER = ("randomness.name", "model.depth", "model.name", "data.name", "optimizer.name",
               "activation.name", "model.width")
PARAMS_LABEL = "model size (trainable parameters)"
TOP_GROUPS = 8
DPI = 110
# Config values that are readable without their key in a label.
SELF_NAMED = ("activation.name", "model.name", "data.name", "optimizer.name")
# Config values that set the parameter count: pd_by_size draws along them, not across.
SIZE_KEYS = (
    "model.name", "model.depth", "model.width", "model.embedding_dim", "model.buckets",
    "data.dim",
)
COLORS = plt.get_cmap("tab10").colors
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
RATIO_TICKS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20)
# An accuracy axis spans at least this much (two points), so that differences far inside
# the intervals do not fill the panel as if they were findings.
MIN_ACCURACY_SPAN = 0.02


def label(row: pd.Series, keys: Sequence[str] | None = None) -> str:
    """Legend label such as 'relu, randomness=init, window=64' from a row's config values.

    `keys` are the config columns to show, usually those that vary (see `varying`);
    by default all dotted columns of the row.
    """
    keys = [k for k in row.index if "." in k] if keys is None else keys
    return ", ".join(_part(key, row[key]) for key in keys)


def _part(key: str, value: object) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if key in SELF_NAMED:
        return text
    parent, leaf = key.rsplit(".", 1)
    return f"{parent.rsplit('.', 1)[-1] if leaf == 'name' else leaf}={text}"


def _rank(column: pd.Series) -> pd.Series:
    return column.astype(object).map({value: i for i, value in enumerate(levels(column))})


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows ordered by the `keys` values, each in canonical order."""
    return frame.sort_values(keys, key=_rank, kind="stable") if keys else frame


def _series(frame: pd.DataFrame, keys: list[str]) -> Iterator[tuple[str, pd.DataFrame]]:
    """(label, rows) for each combination of the `keys` values, in canonical order."""
    if not keys:
        yield "", frame
        return
    for _, rows in _sorted(frame, keys).groupby(keys, sort=False, dropna=False):
        yield label(rows.iloc[0], keys), rows


def _series_labels(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    """Labels of the series of `frame`, in canonical order."""
    return [name for name, _ in _series(frame, keys)]


def _split_keys(frame: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[str]]:
    """Split the series keys into panel keys and line keys, so that no panel holds more than
    MAX_SERIES series: factors move to the panels in PANEL_ORDER until the lines fit."""
    panel_keys: list[str] = []
    line_keys = list(keys)
    order = [k for k in PANEL_ORDER if k in keys] + [k for k in keys if k not in PANEL_ORDER]
    for key in order:
        if _most_series(frame, panel_keys, line_keys) <= MAX_SERIES:
            break
        panel_keys.append(key)
        line_keys.remove(key)
    return panel_keys, line_keys


def _most_series(frame: pd.DataFrame, panel_keys: list[str], line_keys: list[str]) -> int:
    if not line_keys:
        return 1
    if not panel_keys:
        return frame.groupby(line_keys, dropna=False).ngroups
    return max(rows.groupby(line_keys, dropna=False).ngroups
               for _, rows in frame.groupby(panel_keys, dropna=False))


def _with_pd(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[np.isfinite(frame["pd"])]


def _keep_top(frame: pd.DataFrame, scores: pd.Series, title: str) -> tuple[pd.DataFrame, str]:
    """Rows of the TOP_GROUPS groups with the highest score (indexed by group_key)."""
    if len(scores) <= TOP_GROUPS:
        return frame, title
    top = scores.nlargest(TOP_GROUPS).index
    return frame[frame["group_key"].isin(top)], f"{title} (top {TOP_GROUPS} of {len(scores)} by PD)"


def _converged(rows: pd.DataFrame) -> pd.Series:
    """Whether each group converged; groups without the column count as converged."""
    if "converged" not in rows:
        return pd.Series(True, index=rows.index)
    return rows["converged"].astype(object).eq(True) | rows["converged"].isna()


# The skeleton of every figure: _figure makes it and its panels, _title composes its title
# with a note, _legend adds its legend, and _save writes it.
@contextmanager
def _figure(path: str | Path, title: str, panels: int | list[tuple[str, pd.DataFrame]] = 1, *,
            panel_width: float = 7.0, height: float = 4.5, paired: bool = False,
            label_size: str = "medium", **shared):
    """A figure titled `title`, saved to `path` on success and always closed; yields
    (fig, axes), an axes per panel, or an (upper, lower) pair of axes when `paired`.

    `panels` is their number, or the (label, rows) of each (see `_series`): then a panel with
    a label has it as its title. They stand side by side, `panel_width` wide each and 7 at
    least in all; paired, in rows of three. `shared` goes to `plt.subplots` (sharey=True)."""
    labels = [name for name, _ in panels] if isinstance(panels, list) else [""] * panels
    if paired:
        fig, axes = _paired_axes(len(labels))
        titled = [upper for upper, _ in axes]
    else:
        fig, axes = _side_by_side_axes(len(labels), panel_width, height, **shared)
        titled = axes
    try:
        fig.suptitle(title)
        for ax, name in zip(titled, labels, strict=True):
            if name:
                ax.set_title(name, fontsize=label_size)
        yield fig, axes
        _save(fig, path)
    finally:
        plt.close(fig)


def _side_by_side_axes(count: int, panel_width: float, height: float,
                       **shared) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of `count` axes in a row, `panel_width` wide each and 7 at least in all."""
    fig, grid = plt.subplots(1, count, figsize=(max(7.0, panel_width * count), height),
                             squeeze=False, layout="constrained", **shared)
    return fig, list(grid[0])


def _paired_axes(count: int) -> tuple[plt.Figure, list[tuple[plt.Axes, plt.Axes]]]:
    """A figure of `count` panels in rows of three, each an upper and a lower axes sharing x;
    the axes of the last row's empty places are hidden."""
    ncols = min(3, count)
    nrows = -(-count // ncols)
    fig, grid = plt.subplots(2 * nrows, ncols, figsize=(4.2 * ncols + 1, 6.0 * nrows),
                             squeeze=False, layout="constrained", sharex=True)
    pairs = [(grid[2 * row, col], grid[2 * row + 1, col])
             for row, col in (divmod(i, ncols) for i in range(nrows * ncols))]
    for upper, lower in pairs[count:]:
        upper.set_visible(False)
        lower.set_visible(False)
    return fig, pairs[:count]


def _title(study: str, text: str, note: str | None = None) -> str:
    """A figure's title: `text` after the study's name, and a note, if any, in parentheses on
    a line of its own."""
    title = f"{study}: {text}" if study else text
    return f"{title}\n({note})" if note else title


def _unconverged_note(frame: pd.DataFrame, drawn: str = "hollow") -> str | None:
    """The title's note on how groups that did not converge are drawn, if `frame` has any."""
    return None if _converged(frame).all() else f"{drawn}: not converged"


def _legend(fig: plt.Figure, handles: list, title: str | None = None) -> None:
    """The figure's legend of `handles` under the panels, if any of them has a label."""
    labels = [h.get_label() for h in handles]
    if any(labels):
        ncol = max(1, min(len(labels), 4, 100 // (max(map(len, labels)) + 6)))
        fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize="small",
                   title=title, title_fontsize="small")


def _unique_handles(axes) -> list:
    """Labelled handles of all panels, one per label, in order of first appearance."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(name, handle)
    return list(handles.values())


def _save(fig: plt.Figure, path: str | Path) -> None:
    """Every figure is saved here, at one resolution."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")


def _color(i: int) -> tuple:
    """Color of the i-th series, kind or activation: ten colors in turn."""
    return COLORS[i % len(COLORS)]


def _style(i: int) -> dict:
    """Color and line style of the i-th series: ten colors, then the next line style."""
    return {"color": _color(i), "linestyle": LINESTYLES[i // len(COLORS) % len(LINESTYLES)]}


def _errors(rows: pd.DataFrame, name: str, center: str | None = None) -> list[pd.Series]:
    """Error bar lengths below and above `center` (default: the column `name`) from the
    interval columns `<name>_low` and `<name>_high`; none where the interval is unknown."""
    center = rows[center or name]
    return [(center - rows[f"{name}_low"]).clip(lower=0).fillna(0),
            (rows[f"{name}_high"] - center).clip(lower=0).fillna(0)]


def _pd_scale(axes: Sequence, values: pd.Series) -> str:
    """A log y axis when positive PDs span more than 100x: symlog from 0 when some PD is
    exactly 0 (so it still sits at the foot), plain log otherwise.

    Returns the note to append to the PD axis label.
    """
    positive = values[values > 0]
    if positive.empty or positive.max() / positive.min() <= 100:
        return ""
    if len(positive) == len(values):
        for ax in axes:
            ax.set_yscale("log")
        return " (log scale)"
    threshold = 10.0 ** np.floor(np.log10(positive.min()))
    for ax in axes:
        ax.set_yscale("symlog", linthresh=threshold, linscale=0.3)
        ax.set_ylim(bottom=0)
    return " (symlog scale)"


def _pd_axis(axes: Sequence[plt.Axes], values: pd.Series) -> None:
    """PD on the y axis of `axes`, labelled on the first, in the scale `_pd_scale` picks for
    `values`."""
    axes[0].set_ylabel(PD_LABEL + _pd_scale(axes, values))


def _log_x(ax: plt.Axes, values: pd.Series, base: float = 10) -> None:
    """Log x axis; with few distinct values, ticks at exactly those values."""
    ax.set_xscale("log", base=base)
    ticks = sorted(values.unique())
    if len(ticks) <= 8:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())


def _lines(ax: plt.Axes, frame: pd.DataFrame, keys: list[str], x: str, y: str, *,
           order: list[str]) -> None:
    """One line per series of y (a measure or its `_mean`) against x, in a band of the
    measure's interval (its `_low` and `_high` columns); points of groups that did not
    converge are hollow. A series' color follows its place in `order`, the series labels of
    the whole figure, so that every panel agrees."""
    measure = y.removesuffix("_mean")
    for name, rows in _series(frame, keys):
        rows = rows.sort_values(x)
        style = _style(order.index(name))
        ax.plot(rows[x], rows[y], label=name, **style)
        done = _converged(rows)
        ax.plot(rows[x][done], rows[y][done], marker="o", markersize=4, linestyle="",
                color=style["color"])
        ax.plot(rows[x][~done], rows[y][~done], marker="o", markersize=5, linestyle="",
                color=style["color"], markerfacecolor="white")
        ax.fill_between(rows[x], rows[f"{measure}_low"], rows[f"{measure}_high"],
                        color=style["color"], alpha=0.15, linewidth=0)


def _bars(ax: plt.Axes, frame: pd.DataFrame, keys: list[str], activations: list[str], *,
          order: list[str]) -> None:
    """Bars of PD with their intervals at each activation, one per series side by side, in
    the color of its place in `order` (as `_lines`); a bar of a group that did not converge
    is hatched, one of PD exactly 0 is marked "0"."""
    width = 0.8 / len(order)
    for name, rows in _series(frame, keys):
        i = order.index(name)
        x = rows["activation.name"].astype(object).map(activations.index) + \
            (i - (len(order) - 1) / 2) * width
        bars = ax.bar(x, rows["pd"], width, yerr=_errors(rows, "pd"), capsize=2, label=name,
                      color=_color(i), error_kw={"linewidth": 0.8})
        for bar, done in zip(bars, _converged(rows), strict=True):
            if not done:
                bar.set_hatch("///")
                bar.set_facecolor("white")
                bar.set_edgecolor(_color(i))
        for xi in x[rows["pd"] == 0]:
            ax.annotate("0", (xi, 0), ha="center", va="bottom", fontsize="small")


def _interval_bars(ax: plt.Axes, rows: pd.DataFrame, loss: str) -> None:
    """Grey bars of the intervals of each row's PD (y) and mean `loss` (x), under its point."""
    ax.errorbar(rows[f"{loss}_mean"], rows["pd"], xerr=_errors(rows, loss, f"{loss}_mean"),
                yerr=_errors(rows, "pd"), fmt="none", ecolor="lightgrey", elinewidth=0.8,
                zorder=1)


def pd_by_activation(summary: pd.DataFrame, path: str | Path, *, study: str = "") -> Path | None:
    """Bars of PD per activation with their 95% intervals, one per other varying config (e.g.
    randomness), in a panel per model, and per further factor when the bars would not fit."""
    data = _with_pd(summary)
    if data["activation.name"].nunique() < 2:
        return None
    activations = levels(data["activation.name"])
    keys = varying(data, exclude=("activation.name", "model.name"))
    panel_keys, line_keys = _split_keys(data, keys)
    panels = list(_series(data, ["model.name", *panel_keys]))
    if len(panels) == 1:
        panels = [("", data)]  # a lone panel needs no title
    order = _series_labels(data, line_keys)
    title = _title(study, "PD by activation", _unconverged_note(data, "hatched"))
    with _figure(path, title, panels, panel_width=3.5, sharey=True) as (fig, axes):
        for ax, (_, rows) in zip(axes, panels, strict=True):
            _bars(ax, rows, line_keys, activations, order=order)
            tilted = {"rotation": 40, "ha": "right", "rotation_mode": "anchor"}
            ax.set_xticks(range(len(activations)), activations,
                          **(tilted if len(activations) > 4 else {}))
            ax.set_xlabel("activation")
        _pd_axis(axes, data["pd"])
        _legend(fig, _unique_handles(axes))
    return Path(path)


def pd_by_window(summary: pd.DataFrame, path: str | Path, *, study: str = "") -> Path | None:
    """PD against the shuffle window (log2 x), one line per other varying config with its 95%
    band, in panels by study factor when the lines would not fit one. Needs 3 windows."""
    data = _with_pd(summary)
    keys = varying(data, exclude=("randomness.window",))
    if data["randomness.window"].nunique() < 3:
        return None
    panel_keys, line_keys = _split_keys(data, keys)
    panels = list(_series(data, panel_keys))
    order = _series_labels(data, line_keys)
    title = _title(study, "PD by shuffle window", _unconverged_note(data))
    with _figure(path, title, panels, panel_width=4.2, sharey=True) as (fig, axes):
        for ax, (_, rows) in zip(axes, panels, strict=True):
            _lines(ax, rows, line_keys, "randomness.window", "pd", order=order)
            _log_x(ax, data["randomness.window"], base=2)
            ax.set_xlabel("shuffle window (examples)")
        _pd_axis(axes, data["pd"])
        _legend(fig, _unique_handles(axes))
    return Path(path)


def pd_by_size(summary: pd.DataFrame, path: str | Path, *, study: str = "") -> Path | None:
    """PD above and excess log loss (log loss where there is no teacher) below, with 95% bands,
    against parameter count (log x): one line per varying config but those that set the size
    (`SIZE_KEYS`; depth has lines of its own where the width varies too). Needs 2 sizes."""
    data = _with_pd(summary)
    if data["n_params"].nunique() < 2:
        return None
    quality = reported_loss(data)
    # Lines run along the width; depth, when it varies too, makes lines of its own.
    along = tuple(k for k in SIZE_KEYS if k != "model.depth" or data["model.width"].nunique() < 2)
    keys = varying(data, exclude=along)
    panel_keys, line_keys = _split_keys(data, keys)
    panels = list(_series(data, panel_keys))
    order = _series_labels(data, line_keys)
    title = _title(study, f"PD and {loss_label(quality)} by model size",
                   _unconverged_note(data))
    with _figure(path, title, panels, paired=True) as (fig, axes):
        for (upper, lower), (_, rows) in zip(axes, panels, strict=True):
            _lines(upper, rows, line_keys, "n_params", "pd", order=order)
            _lines(lower, rows, line_keys, "n_params", f"{quality}_mean", order=order)
            _pd_axis([upper], rows["pd"])
            lower.set_ylabel(f"{loss_label(quality)} (nats)")
            for ax in (upper, lower):
                _log_x(ax, data["n_params"])
            lower.set_xlabel(PARAMS_LABEL)
        _legend(fig, _unique_handles(upper for upper, _ in axes))
    return Path(path)


def pd_over_training(by_step: pd.DataFrame, summary: pd.DataFrame, path: str | Path, *,
                     study: str = "") -> Path | None:
    """PD and excess log loss (log loss where there is no teacher), with 95% interval bands,
    against the training step (symlog x: step 0 is the initialization), one line per group,
    in panels by study factor. Groups that did not converge are hollow."""
    if by_step is None or by_step.empty:
        return None
    status = summary.set_index("group_key")["converged"] if "converged" in summary else None
    data = by_step.assign(converged=True if status is None else by_step["group_key"].map(status))
    groups = data.drop_duplicates("group_key")
    keys = varying(groups, exclude=("step",))
    panel_keys, line_keys = _split_keys(groups, keys)
    quality = reported_loss(data)
    loss = f"{quality}_mean" if f"{quality}_mean" in data else None
    panels = list(_series(data, panel_keys))
    order = _series_labels(data, line_keys)
    title = _title(study, f"PD and {loss_label(quality)} over training",
                   _unconverged_note(groups))
    with _figure(path, title, panels, paired=True) as (fig, axes):
        for (upper, lower), (_, rows) in zip(axes, panels, strict=True):
            _lines(upper, rows, line_keys, "step", "pd", order=order)
            _pd_axis([upper], rows["pd"])
            if loss:
                _lines(lower, rows, line_keys, "step", loss, order=order)
                lower.set_ylabel(f"{loss_label(quality)} (nats)")
                if (data[loss] > 0).all():
                    lower.set_yscale("log")
                else:
                    lower.set_yscale("symlog", linthresh=1e-3)
            for ax in (upper, lower):
                ax.set_xscale("symlog", linthresh=1)
                ax.set_xlim(left=0)  # no empty negative half
            lower.set_xlabel("training step (symlog scale; 0 = initialization)")
        _legend(fig, _unique_handles(upper for upper, _ in axes))
    return Path(path)


def tradeoff(summary: pd.DataFrame, path: str | Path, *, study: str = "") -> Path | None:
    """PD against excess log loss (log loss where there is no teacher), one point per group
    with its 95% intervals as grey bars: color = activation, marker = model, hollow = not
    converged."""
    data = _with_pd(summary)
    if len(data) < 2:
        return None
    loss = reported_loss(data)
    mean = f"{loss}_mean"
    activations = levels(data["activation.name"])
    models = levels(data["model.name"])
    title = _title(study, f"PD vs {loss_label(loss)}", _unconverged_note(data))
    with _figure(path, title) as (fig, (ax,)):
        for model_index, model in enumerate(models):
            rows = data[data["model.name"] == model]
            colors = [_color(activations.index(a)) for a in rows["activation.name"]]
            faces = [c if done else "white" for c, done in zip(colors, _converged(rows),
                                                               strict=True)]
            _interval_bars(ax, rows, loss)
            ax.scatter(rows[mean], rows["pd"], facecolors=faces, edgecolors=colors,
                       marker=MARKERS[model_index % len(MARKERS)], s=30, alpha=0.8)
        handles = [Line2D([], [], color=_color(i), marker="o", linestyle="",
                          label=a) for i, a in enumerate(activations)]
        handles += [Line2D([], [], color="grey", marker=MARKERS[i % len(MARKERS)], linestyle="",
                           label=m) for i, m in enumerate(models)]
        _legend(fig, handles, title="color: activation, marker: model")
        ax.set_xlabel(f"{loss_label(loss)} (nats)")
        _pd_axis([ax], data["pd"])
    return Path(path)


# What the per-example figure bins examples by (see analysis.per_example): title, x label.
PER_EXAMPLE_BASES = {
    "teacher": ("PD by teacher probability", r"teacher probability $p^*(x)$"),
    "confidence": ("PD by the runs' mean confidence (no teacher)",
                   "mean confidence of the runs (top class probability, or p for binary "
                   "labels, averaged over runs)"),
}


def pd_by_teacher_probability(
    summary: pd.DataFrame, per_example: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path, *, study: str = "", bins: int = 20, basis: str = "teacher",
) -> Path | None:
    """Mean per-example PD in `bins` bins of the teacher's probability p*(x) (basis "teacher")
    or of the runs' mean confidence (basis "confidence"), one line per group, for the
    TOP_GROUPS groups of highest PD (the title says so)."""
    data = _with_pd(summary)
    data = data[data["group_key"].isin(list(per_example))]
    if data.empty:
        return None
    heading, x_label = PER_EXAMPLE_BASES[basis]
    data, title = _keep_top(data, data.set_index("group_key")["pd"], heading)
    keys = varying(data)
    edges = np.linspace(0, 1, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    means = []
    with _figure(path, _title(study, title)) as (fig, (ax,)):
        for i, (_, row) in enumerate(_sorted(data, keys).iterrows()):
            p_star, pd_x = per_example[row["group_key"]]
            which = np.clip(np.digitize(p_star, edges) - 1, 0, bins - 1)
            counts = np.bincount(which, minlength=bins)
            with np.errstate(invalid="ignore"):
                mean = np.bincount(which, weights=pd_x, minlength=bins) / counts
            means.append(mean)
            ax.plot(centers, mean, marker="o", markersize=3, label=label(row, keys), **_style(i))
        ax.set_xlim(0, 1)
        ax.set_xlabel(x_label)
        values = pd.Series(np.concatenate(means))
        _pd_axis([ax], values[np.isfinite(values)])
        _legend(fig, _unique_handles([ax]))
    return Path(path)


def ensemble_pd(ensembles: pd.DataFrame, path: str | Path, *, study: str = "") -> Path | None:
    """PD and accuracy against ensemble size k (log2 x), one line per group with its 95% band,
    for the TOP_GROUPS groups of highest single-model PD (the title says so); the accuracy
    axis as `_accuracy_limits` says. Needs 2 ensemble sizes."""
    if ensembles.empty or ensembles["k"].nunique() < 2:
        return None
    single = ensembles[ensembles["k"] == ensembles["k"].min()]
    data, title = _keep_top(ensembles, single.set_index("group_key")["pd"],
                            "PD and accuracy by ensemble size")
    keys = varying(data)
    order = _series_labels(data, keys)
    with _figure(path, _title(study, title), 2, panel_width=3.5) as (fig, axes):
        _lines(axes[0], _with_pd(data), keys, "k", "pd", order=order)
        _lines(axes[1], data, keys, "k", "accuracy", order=order)
        _pd_axis(axes[:1], _with_pd(data)["pd"])
        axes[1].set_ylim(*_accuracy_limits(data))
        axes[1].set_ylabel("accuracy (bands: 95% intervals)")
        for ax in axes:
            _log_x(ax, data["k"], base=2)
            ax.set_xlabel("ensemble size k (models averaged)")
        _legend(fig, _unique_handles(axes))
    return Path(path)


def _accuracy_limits(frame: pd.DataFrame) -> tuple[float, float]:
    """A y-range for the accuracies of `frame` that holds each one and its interval
    (`accuracy_low`, `accuracy_high`, clipped to [0, 1]), at least MIN_ACCURACY_SPAN tall
    around them and within [0, 1], with a 5% margin."""
    values = pd.concat([frame[c] for c in ("accuracy", "accuracy_low", "accuracy_high")])
    values = values[np.isfinite(values)].clip(0, 1)
    low, high = values.min(), values.max()
    widen = max(0.0, MIN_ACCURACY_SPAN - (high - low)) / 2
    low, high = low - widen, high + widen
    shift = max(0.0, -low) - max(0.0, high - 1)  # back inside [0, 1]
    low, high = low + shift, high + shift
    margin = 0.05 * (high - low)
    return low - margin, high + margin


def _mitigation_labels(frame: pd.DataFrame) -> pd.Series:
    """Each row's mitigation in words, with its activation where activations vary."""
    labels = pd.Series([mitigation_label(row) for row in frame.to_dict("records")],
                       index=frame.index)
    if frame["activation.name"].nunique() > 1:
        labels = labels.where(labels != "none", "none, " + frame["activation.name"])
    return labels


def _mitigation_kinds(frame: pd.DataFrame) -> pd.Series:
    """Each row's kind of mitigation (its name, `weight_decay`, or `none`), for colors."""
    kinds = pd.Series("none", index=frame.index)
    if "optimizer.weight_decay" in frame:
        kinds = kinds.where(frame["optimizer.weight_decay"].isna(), "weight_decay")
    if "mitigation.name" in frame:
        kinds = kinds.where(frame["mitigation.name"].isna(), frame["mitigation.name"])
    return kinds


def _has_mitigations(frame: pd.DataFrame) -> bool:
    """Whether some row has a mitigation (a mitigation key with a value)."""
    return any(is_mitigation_key(key) and frame[key].notna().any() for key in frame.columns)


def pd_vs_loss(summary: pd.DataFrame, path: str | Path, *, study: str = "") -> Path | None:
    """PD against excess log loss (log loss without a teacher) for each mitigation and
    strength, with 95% intervals over seeds and test examples, one panel per configuration
    of the other factors: a color per kind of mitigation, a marker per strength (in order),
    a star per group without a mitigation. Hollow: not converged."""
    data = _with_pd(summary)
    if not _has_mitigations(data) or len(data) < 2:
        return None
    quality = reported_loss(data)
    arms = _mitigation_labels(data)
    kinds = _mitigation_kinds(data)
    data = data.assign(arm=arms, kind=kinds.where(kinds != "none", arms))  # a star each
    keys = [key for key in varying(data, exclude=["arm", "kind", "activation.name",
                                                  "activation.beta"])
            if not is_mitigation_key(key)]
    panels = list(_series(data, keys))
    kinds, arms = levels(data["kind"]), levels(data["arm"])
    kind_of = dict(zip(data["arm"], data["kind"], strict=True))
    strengths = {arm: [a for a in arms if kind_of[a] == kind_of[arm]].index(arm) for arm in arms}
    title = _title(study, f"PD vs {loss_label(quality)} by mitigation", _unconverged_note(data))
    with _figure(path, title, panels, panel_width=5.0, label_size="small") as (fig, axes):
        for ax, (_, rows) in zip(axes, panels, strict=True):
            _interval_bars(ax, rows, quality)
            for (_, row), done in zip(rows.iterrows(), _converged(rows), strict=True):
                color = _color(kinds.index(row["kind"]))
                plain = row["kind"].startswith("none")
                marker = "*" if plain else MARKERS[strengths[row["arm"]] % len(MARKERS)]
                ax.scatter(row[f"{quality}_mean"], row["pd"], s=110 if plain else 36,
                           marker=marker, facecolors=color if done else "white",
                           edgecolors="black" if plain else color, zorder=2, label=row["arm"])
            ax.set_xlabel(f"{loss_label(quality)} (nats)")
        axes[0].set_ylabel(PD_LABEL)
        _legend(fig, sorted(_unique_handles(axes), key=lambda h: arms.index(h.get_label())),
                title="color: mitigation, marker: strength, star: none")
    return Path(path)


def pd_reduction(effects: pd.DataFrame, path: str | Path, *, study: str = "") -> Path | None:
    """Each mitigation's PD relative to the same configuration without one, with its 95%
    interval over seeds and test examples (log x; 1 = no change), one panel per
    configuration of the other factors. Filled: the change is significant at 5% after
    Holm's adjustment."""
    if effects is None or effects.empty:
        return None
    keys = [c for c in effects.columns if "." in c]  # the config values; measures have none
    panels = list(_series(effects, keys))
    arms = levels(effects["mitigation"])
    title = _title(study, "PD relative to no mitigation", "filled: significant at 5% after Holm")
    with _figure(path, title, panels, panel_width=5.0, height=max(4.5, 1.2 + 0.3 * len(arms)),
                 label_size="small", sharey=True) as (fig, axes):
        for ax, (_, rows) in zip(axes, panels, strict=True):
            y = [arms.index(arm) for arm in rows["mitigation"]]
            ax.errorbar(rows["ratio"], y, xerr=_errors(rows, "ratio"), fmt="none",
                        ecolor="grey", elinewidth=1)
            significant = rows["p_adjusted"] < 0.05
            ax.scatter(rows["ratio"], y, color="black", s=30,
                       facecolors=["black" if s else "white" for s in significant], zorder=2)
            _ratio_x(ax)
        axes[0].set_yticks(range(len(arms)), arms, fontsize="small")
        axes[0].invert_yaxis()
    return Path(path)


def _ratio_x(ax: plt.Axes) -> None:
    """A log x axis of PD ratios to no mitigation, with a dashed line at 1 (no change) and
    plain ticks from RATIO_TICKS."""
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.set_xticks([t for t in RATIO_TICKS if low <= t <= high])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("PD ratio to no mitigation (log scale)")


def pd_by_fork_step(summary: pd.DataFrame, path: str | Path, *, study: str = "") -> Path | None:
    """Final PD against the fork step (symlog x; 0 = no fork, the source acting throughout),
    one line per activation with its 95% interval band over seeds and test examples, one
    panel per configuration of the other factors (model and source); a dotted line at each
    activation's PD without a fork. Hollow: not converged."""
    if "randomness.fork_step" not in summary:
        return None
    data = _with_pd(summary).assign(**{
        "randomness.fork_step": summary["randomness.fork_step"].fillna(0)})
    keys = varying(data, exclude=["randomness.fork_step"])
    line_keys = [key for key in keys if key.startswith("activation.")]
    panel_keys = [key for key in keys if key not in line_keys and key != "randomness.window"]
    panels = list(_series(data, panel_keys))
    order = _series_labels(data, line_keys)
    title = _title(study, "final PD by the step where runs fork", _unconverged_note(data))
    with _figure(path, title, panels, panel_width=3.6, label_size="small") as (fig, axes):
        for ax, (_, rows) in zip(axes, panels, strict=True):
            _lines(ax, rows, line_keys, "randomness.fork_step", "pd", order=order)
            for series, members in _series(rows, line_keys):
                unforked = members[members["randomness.fork_step"] == 0]
                if len(unforked):
                    ax.axhline(unforked["pd"].iloc[0], linestyle=":", linewidth=0.8,
                               color=_color(order.index(series)))
            _fork_step_x(ax, data["randomness.fork_step"])
            ax.set_ylim(bottom=0)
        axes[0].set_ylabel(PD_LABEL + " at the end")
        _legend(fig, _unique_handles(axes), title="dotted: the same source without a fork")
    return Path(path)


def _fork_step_x(ax: plt.Axes, steps: pd.Series) -> None:
    """A symlog x axis of fork steps from 0 (no fork), linear up to the first fork, with a
    tick at each step."""
    positive = steps[steps > 0]
    ax.set_xscale("symlog", linthresh=positive.min() if len(positive) else 1)
    ax.set_xlim(0, steps.max() * 1.2 if steps.max() > 0 else 1)  # no negative half
    ticks = sorted(steps.unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize="small", rotation=45)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("fork step (symlog; 0 = no fork)")


def draw_all(
    summary: pd.DataFrame, ensembles: pd.DataFrame | None,
    per_example: dict[str, tuple[np.ndarray, np.ndarray]] | None,
    out_dir: str | Path, study: str, by_step: pd.DataFrame | None = None,
    per_example_basis: str = "teacher", effects: pd.DataFrame | None = None,
    workers: int | None = None,
) -> list[Path]:
    """Draw every figure the data supports into `out_dir/<name>.png`, by `workers` processes
    (default: one per core); return the paths written. `per_example_basis` says what the
    per-example values are binned by (see `pd_by_teacher_probability`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "pd_by_activation": lambda p: pd_by_activation(summary, p, study=study),
        "pd_by_window": lambda p: pd_by_window(summary, p, study=study),
        "pd_by_size": lambda p: pd_by_size(summary, p, study=study),
        "pd_over_training": lambda p: pd_over_training(by_step, summary, p, study=study),
        "tradeoff": lambda p: tradeoff(summary, p, study=study),
        "pd_by_teacher_probability": lambda p: pd_by_teacher_probability(
            summary, per_example or {}, p, study=study, basis=per_example_basis),
        "ensemble_pd": lambda p: None if ensembles is None else ensemble_pd(
            ensembles, p, study=study),
        "pd_vs_loss": lambda p: pd_vs_loss(summary, p, study=study),
        "pd_reduction": lambda p: pd_reduction(effects, p, study=study),
        "pd_by_fork_step": lambda p: pd_by_fork_step(summary, p, study=study),
    }
    written = parallel.fork_map(lambda figure: figure[1](out_dir / f"{figure[0]}.png"),
                                list(figures.items()), workers)
    return [path for path in written if path is not None]


def pareto(trials: pd.DataFrame, path: str | Path, *, study: str = "") -> Path:
    """PD against the loss the study reports (excess log loss, or log loss without a teacher:
    whichever column the trials have) for every tuning trial, colored by activation; the Pareto
    front (no trial better in both) outlined and joined by a step line."""
    loss = EXCESS_LOSS if EXCESS_LOSS in trials else LOSS
    with _figure(path, _title(study, "accuracy and reproducibility of each trial")) as (
            fig, (ax,)):
        key = "activation" if "activation" in trials.columns else None
        groups = trials.groupby(key) if key else [("trials", trials)]
        for i, (name, rows) in enumerate(groups):
            ax.scatter(rows[loss], rows["pd"], s=24, alpha=0.75, label=str(name),
                       color=_color(i))
        front = trials[trials["pareto"]].sort_values(loss)
        ax.scatter(front[loss], front["pd"], s=70, facecolors="none",
                   edgecolors="black", linewidths=1.2, label="Pareto front")
        ax.step(front[loss], front["pd"], where="post", color="black",
                linewidth=0.8)
        # Both objectives span decades; symlog keeps an excess loss at or below 0 on the axis.
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_yscale("log")
        over = " over the teacher" if loss == EXCESS_LOSS else ""
        ax.set_xlabel(f"{loss_label(loss)}{over} (nats, symlog scale)")
        ax.set_ylabel(PD_LABEL + " (log scale)")
        ax.legend(fontsize="small")
    return Path(path)
