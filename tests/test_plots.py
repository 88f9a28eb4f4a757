"""The recurring plots (cacicd.paper.plots) draw what their tables hold."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from cacicd.paper import plots  # noqa: E402


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_recall_at_k_draws_each_model_in_percent(ax):
    k = np.arange(1, 51)
    curves = pd.concat([pd.DataFrame({"model": m, "level": "billing", "k": k, "mean": v * np.ones(50),
                                      "sem": np.nan}) for m, v in (("a", 0.5), ("b", 0.25))])
    plots.recall_at_k(ax, curves, ["a", "b"], "billing", {"a": "A", "b": "B"}, {"a": "C0", "b": "C1"}, title="t")
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["A", "B"]
    assert np.allclose(lines[0].get_ydata(), 50) and np.allclose(lines[1].get_ydata(), 25)
    assert ax.get_xlim() == (1, 50) and ax.get_title() == "t"


def test_recall_at_k_reads_another_model_column(ax):
    curves = pd.DataFrame({"experiment": "a", "level": "3digit", "k": [2, 1], "mean": [0.2, 0.1], "sem": [0.0, 0.0]})
    plots.recall_at_k(ax, curves, ["a"], "3digit", {"a": "A"}, {"a": "C0"}, model="experiment")
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2]  # sorted by K


def test_ecdf_one_line_per_sample_nan_dropped(ax):
    plots.ecdf(ax, {"x": np.array([0.1, 0.2, np.nan, 0.4]), "empty": np.array([np.nan])}, xlabel="v")
    lines = ax.get_lines()
    assert len(lines) == 1 and lines[0].get_label() == "x (n = 3)"
    y = lines[0].get_ydata()
    assert np.nanmax(y) == pytest.approx(1.0)
    assert ax.get_xlabel() == "v" and ax.get_ylabel() == "cumulative share of codes"


def test_relative_bars_one_bar_per_model_and_r(ax):
    rel = pd.DataFrame({"model": ["ref", "ref", "a", "a"], "R": [25, 50, 25, 50], "rel": [0, 0, 5.0, -2.0],
                        "rel_sem": [np.nan, np.nan, 1.0, 1.0], "mean": [10.0, 20.0, 9.5, 20.4]})
    plots.relative_bars(ax, rel, ["a"], [25, 50], "ref", {"a": "A"}, {"a": "C0"}, "μF1")
    heights = [p.get_height() for p in ax.patches]
    assert heights == [5.0, -2.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["RE@25\nμF1: 10.0", "RE@50\nμF1: 20.0"]


def test_heatmap_annotates_each_cell(ax):
    table = pd.DataFrame({"RE@10": [-0.5, 0.25], "RE@50": [np.nan, 0.75]}, index=["ndcg", "ece"])
    plots.heatmap(ax, table, label="ρ")
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["-0.50", "0.25", "0.75"]
