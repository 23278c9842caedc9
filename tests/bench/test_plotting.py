"""``handprop.plotting``: the one plotting helper (Agg backend, atomic save)."""

from __future__ import annotations

import pytest

from handprop import plotting

pytest.importorskip("matplotlib")


def test_pyplot_is_headless():
    import matplotlib

    plt = plotting.pyplot()
    assert matplotlib.get_backend().lower() == "agg"
    assert plt.__name__ == "matplotlib.pyplot"


def test_save_figure_is_atomic_and_closes(tmp_path):
    plt = plotting.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = plotting.save_figure(fig, tmp_path / "sub" / "line.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in out.parent.iterdir()] == ["line.png"]  # no temporary left


def test_a_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    plt = plotting.pyplot()
    path = tmp_path / "keep.png"
    path.write_bytes(b"old")
    fig, _ = plt.subplots()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", boom)
    with pytest.raises(RuntimeError):
        plotting.save_figure(fig, path)
    assert path.read_bytes() == b"old"
    plt.close(fig)


def test_train_and_experiments_share_the_helper():
    from handprop.experiments import plots as experiment_plots
    from handprop.train import plots as train_plots

    assert train_plots.save_figure is plotting.save_figure
    assert experiment_plots.pyplot is plotting.pyplot
    assert not hasattr(train_plots, "_pyplot")
