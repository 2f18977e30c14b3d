import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from irrepro import figures, summary_schema

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONFIG = {
    "data.name": "linear", "model.name": "two_units", "model.depth": 1, "model.width": 2,
    "activation.name": "relu", "activation.beta": 1.0, "randomness.name": "all",
    "randomness.window": 1024, "optimizer.name": "sgd", "optimizer.lr": 0.1,
}
PD_BY_RANDOMNESS = {"none": 0.0, "init": 2e-4, "shuffle": 5e-3, "all": 3e-2}
N_PARAMS = {"one_unit": 22, "two_units": 44}


def group(i, n_runs=4, **config):
    """One synthetic summary row; PD grows with the group index and the randomness source."""
    row = {**CONFIG, **config, "group_key": f"g{i:02d}", "n_runs": n_runs}
    row["n_params"] = N_PARAMS.get(row["model.name"], 22) * row["model.width"]
    pd_value = PD_BY_RANDOMNESS[row["randomness.name"]] * (1 + 0.1 * i)
    if n_runs < 2:
        pd_value = np.nan
    row.update(
        pd=pd_value, pd_low=0.8 * pd_value, pd_high=1.2 * pd_value, pd_relative=pd_value,
        pd_l2=pd_value, churn=pd_value / 2, std_mean=pd_value,
        log_loss_mean=0.4, log_loss_std=0.01, excess_log_loss_mean=0.01 + 0.002 * i,
        excess_log_loss_std=0.001, accuracy_mean=0.8, accuracy_std=0.01,
        auc_mean=0.85, auc_std=0.01,
    )
    for name in ("log_loss", "excess_log_loss", "accuracy"):
        mean = row[f"{name}_mean"]
        row[f"{name}_low"], row[f"{name}_high"] = mean * 0.9, mean * 1.1
    return row


def summary_of(configs):
    return pd.DataFrame([group(i, **config) for i, config in enumerate(configs)])


def grid_summary():
    """3 activations x 3 randomness sources x 2 models, plus a one-run group without PD."""
    configs = [
        {"activation.name": a, "randomness.name": r, "model.name": m}
        for a, r, m in itertools.product(
            ("relu", "smelu", "tanh"), ("none", "init", "all"), ("one_unit", "two_units")
        )
    ]
    return summary_of([*configs, {"activation.name": "gelu", "n_runs": 1}])


def window_summary():
    return summary_of(
        {"activation.name": a, "randomness.name": "shuffle", "randomness.window": w}
        for a in ("relu", "swish") for w in (1, 4, 16, 64, 256)
    )


def size_summary():
    return summary_of(
        {"activation.name": a, "model.width": w} for a in ("relu", "tanh") for w in (1, 2, 4, 8)
    )


def per_example_of(summary, n=400):
    rng = np.random.default_rng(0)
    result = {}
    for key, pd_value in zip(summary["group_key"], summary["pd"], strict=True):
        p_star = rng.uniform(size=n)
        result[key] = (p_star, np.nan_to_num(pd_value) * 4 * p_star * (1 - p_star))
    return result


def ensembles_of(summary):
    rows = [
        {**row, "k": k, "n_ensembles": 8 // k, "pd": row["pd"] / k, "accuracy": 0.8 + 0.01 * k,
         "log_loss": 0.4 - 0.01 * k, "pd_low": row["pd"] / k * 0.9, "pd_high": row["pd"] / k * 1.1,
         "accuracy_low": 0.79 + 0.01 * k, "accuracy_high": 0.81 + 0.01 * k}
        for row in summary.to_dict("records")
        if np.isfinite(row["pd"])
        for k in (1, 2, 4)
    ]
    return pd.DataFrame(rows)[["group_key", *CONFIG, "k", "n_ensembles", "pd", "accuracy",
                               "log_loss", "pd_low", "pd_high", "accuracy_low", "accuracy_high"]]


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5000


@pytest.fixture
def titles(monkeypatch):
    """The suptitle and the number of first-panel lines of every figure saved."""
    seen = []
    save = Figure.savefig

    def spy(fig, *args, **kwargs):
        seen.append((fig._suptitle.get_text(), len(fig.axes[0].get_lines())))
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return seen


@pytest.fixture
def saved(monkeypatch):
    """Every figure saved."""
    seen = []
    save = Figure.savefig

    def spy(fig, *args, **kwargs):
        seen.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return seen


def uneven_summary(**along):
    """Six activations under randomness 'all' but five under 'init': 11 series, too many for
    one panel, so panels by randomness that hold different series; each group at every value
    of `along` (one config column and its values)."""
    [(key, values)] = along.items() or [("optimizer.lr", (0.1,))]
    activations = ("relu", "smelu", "swish", "gelu", "softplus", "elu")
    return summary_of(
        {"randomness.name": mode, "activation.name": a, key: v}
        for mode, kept in (("init", activations[1:]), ("all", activations))
        for a in kept for v in values
    )


def over_training(summary, path):
    steps = pd.DataFrame([{**row, "step": step} for row in summary.to_dict("records")
                          for step in (0, 10, 100)])
    return figures.pd_over_training(steps, summary, path)


@pytest.mark.parametrize(
    "draw, frame",
    [
        (figures.pd_by_window, lambda: uneven_summary(**{"randomness.window": (1, 4, 16)})),
        (figures.pd_by_size, lambda: uneven_summary(**{"model.width": (1, 2, 4)})),
        (over_training, uneven_summary),
    ],
)
def test_small_multiples_color_each_series_alike_and_legend_all(tmp_path, saved, draw, frame):
    assert draw(frame(), tmp_path / "figure.png") is not None
    [fig] = saved
    colors, in_panel = {}, []
    for ax in fig.axes:
        lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
        for line in lines:
            colors.setdefault(line.get_label(), set()).add(line.get_color())
        in_panel.append({line.get_label() for line in lines})
    assert len({frozenset(names) for names in in_panel if names}) == 2
    assert len(colors) == 6 and all(len(seen) == 1 for seen in colors.values())
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert sorted(legend) == sorted(colors)


@pytest.mark.parametrize("half_width", [0.01, np.nan, 0.9])
def test_the_ensemble_accuracy_axis_holds_the_intervals_and_spans_two_points(
        tmp_path, saved, half_width):
    frame = ensembles_of(grid_summary())
    frame["accuracy"] = 0.8425 + 0.0018 * np.linspace(0, 1, len(frame))  # noise, not signal
    frame["accuracy_low"] = frame["accuracy"] - half_width
    frame["accuracy_high"] = frame["accuracy"] + half_width
    figures.ensemble_pd(frame, tmp_path / "ensembles.png")
    accuracy_axes = saved[0].axes[1]
    low, high = accuracy_axes.get_ylim()
    assert high - low >= figures.MIN_ACCURACY_SPAN
    if half_width == 0.01:
        assert low < 0.8325 and high > 0.8543
    if half_width == 0.9:  # intervals past 0 and 1 are cut there
        assert -0.06 < low < 0 and 1 < high < 1.06
    assert "95% intervals" in accuracy_axes.get_ylabel()


def test_label_shows_values_with_short_keys():
    row = pd.Series({**CONFIG, "randomness.name": "init", "randomness.window": 64, "pd": 0.1})
    keys = ["activation.name", "randomness.name", "randomness.window", "optimizer.lr"]
    assert figures.label(row, keys) == "relu, randomness=init, window=64, lr=0.1"
    assert figures.label(row).startswith("linear, two_units, depth=1, width=2, relu, beta=1")


def test_varying_lists_changing_config_columns_in_label_order():
    summary = grid_summary()
    assert summary_schema.varying(summary) == ["activation.name", "model.name", "randomness.name"]
    assert summary_schema.varying(summary, exclude=("model.name",)) == [
        "activation.name", "randomness.name"
    ]


@pytest.mark.parametrize(
    "draw, frame",
    [
        (figures.pd_by_activation, grid_summary),
        (figures.pd_by_window, window_summary),
        (figures.pd_by_size, size_summary),
        (figures.tradeoff, grid_summary),
        (figures.ensemble_pd, lambda: ensembles_of(grid_summary())),
    ],
)
def test_figure_writes_png(tmp_path, draw, frame):
    path = tmp_path / "sub" / "figure.png"
    assert draw(frame(), path, study="s") == path
    assert_png(path)
    assert plt.get_fignums() == []


def test_teacher_probability_writes_png(tmp_path):
    summary = window_summary()
    path = tmp_path / "teacher.png"
    assert figures.pd_by_teacher_probability(summary, per_example_of(summary), path) == path
    assert_png(path)
    assert plt.get_fignums() == []


def test_teacher_probability_keeps_top_groups_and_says_so(tmp_path, titles):
    summary = window_summary()  # 10 groups
    figures.pd_by_teacher_probability(summary, per_example_of(summary), tmp_path / "t.png")
    [(title, n_lines)] = titles
    assert "top 8 of 10" in title
    assert n_lines == 8


@pytest.mark.parametrize(
    "draw, frame",
    [
        (figures.pd_by_activation, lambda: summary_of([{"randomness.name": "init"}, {}])),
        (figures.pd_by_window, lambda: summary_of([{"randomness.window": w} for w in (1, 2)])),
        (figures.pd_by_size, lambda: grid_summary().query("`model.name` == 'one_unit'")),
        (figures.tradeoff, lambda: summary_of([{}, {"activation.name": "tanh", "n_runs": 1}])),
        (figures.ensemble_pd, lambda: ensembles_of(grid_summary()).query("k == 1")),
    ],
)
def test_figure_returns_none_when_data_do_not_vary(tmp_path, draw, frame):
    path = tmp_path / "figure.png"
    assert draw(frame(), path) is None
    assert not path.exists()
    assert plt.get_fignums() == []


def test_teacher_probability_returns_none_without_per_example_data(tmp_path):
    assert figures.pd_by_teacher_probability(grid_summary(), {}, tmp_path / "t.png") is None


def test_draw_all_writes_supported_figures_with_study_titles(tmp_path, titles):
    summary = grid_summary()
    paths = figures.draw_all(  # in this process, where `titles` sees each figure saved
        summary, ensembles_of(summary), per_example_of(summary), tmp_path / "out", "grid",
        workers=1,
    )
    # The grid has one window, but its two models differ in size.
    assert {p.name for p in paths} == {
        "pd_by_activation.png", "pd_by_size.png", "tradeoff.png",
        "pd_by_teacher_probability.png", "ensemble_pd.png",
    }
    assert sorted(paths) == sorted((tmp_path / "out").iterdir())
    for path in paths:
        assert_png(path)
    assert all(title.startswith("grid: ") for title, _ in titles)
    # 18 groups have a PD; the one-run group has none and is left out.
    assert "grid: PD by teacher probability (top 8 of 18 by PD)" in [t for t, _ in titles]
    assert plt.get_fignums() == []


def test_draw_all_without_ensembles_or_per_example(tmp_path):
    paths = figures.draw_all(window_summary(), None, None, tmp_path, "windows")
    assert {p.name for p in paths} == {"pd_by_activation.png", "pd_by_window.png", "tradeoff.png"}
    assert sorted(paths) == sorted(tmp_path.iterdir())


def test_failed_figure_is_closed(tmp_path):
    with pytest.raises(KeyError):
        figures.pd_by_window(window_summary().drop(columns=["pd_low"]), tmp_path / "w.png")
    assert plt.get_fignums() == []


def test_pd_scale_is_symlog_only_for_wide_ranges():
    fig, ax = plt.subplots()
    try:
        assert figures._pd_scale([ax], pd.Series([0.0, 0.01, 0.5])) == ""
        assert ax.get_yscale() == "linear"
        assert figures._pd_scale([ax], pd.Series([0.0, 1e-4, 0.5])) == " (symlog scale)"
        assert ax.get_yscale() == "symlog"
    finally:
        plt.close(fig)
