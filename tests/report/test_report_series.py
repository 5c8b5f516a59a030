"""`optimlab report --series NAME...`: any logged metrics.jsonl series over steps, per task, with seed bands."""

from __future__ import annotations

import numpy as np
import pytest

from optimlab.errors import ConfigError
from optimlab.report import plots, write_report
from optimlab.report.analysis import analyze
from optimlab.report.cli import report_main
from optimlab.report.load import load_runs
from optimlab.report.series import resolve
from report_fakes import EVAL_EVERY, STEPS, write_run


def _kappa(optim: str, seed: int):
    return lambda step: (10.0 if optim == "adam" else 0.0) + seed + step / 100


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "runs"
    for task, main, higher in (("cls", "accuracy", True), ("quad", "loss", False)):
        for optim, val in (("sgd", 0.8), ("adam", 0.9)):
            for seed in (0, 1, 2):
                extra = {"optim/kappa": _kappa(optim, seed)}
                if task == "cls":
                    extra.update({"instr/grad_stats/norm": lambda s: 1.0, "instr/grad_stats/var": lambda s: 2.0})
                value = val if higher else 1 - val
                write_run(root, f"{task}-{optim}-{seed}", task=task, optim=optim, seed=seed, val=value, test=value,
                          main_metric=main, higher=higher, extra=extra, strict=seed == 1)  # fmt: skip
    return root


def test_resolve_exact_keys_and_patterns(root):
    runs = load_runs([root])
    assert resolve(["optim/kappa"], runs) == ["optim/kappa"]
    assert resolve(["instr/grad_stats/*", "optim/kappa", "instr/grad_stats/var"], runs) == [
        "instr/grad_stats/norm", "instr/grad_stats/var", "optim/kappa"]  # fmt: skip
    assert resolve([], runs) == []
    with pytest.raises(ConfigError, match=r"--series 'optim/kapa': no run logged .*did you mean optim/kappa"):
        resolve(["optim/kapa"], runs)
    with pytest.raises(ConfigError, match=r"--series 'hyper/\*': the pattern matches no logged metric"):
        resolve(["hyper/*"], runs)
    with pytest.raises(ConfigError, match="'step'"):
        resolve(["step"], runs)


def test_series_figure_is_the_mean_and_min_max_over_the_seeds_of_each_optimizer(root, monkeypatch):
    (cls, _) = analyze(load_runs([root])).tasks
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    assert plots.plot_series(cls, "optim/kappa", plots.colors(["adam", "sgd"]), root / "x.png") is not None
    (ax,) = drawn[0].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"adam (n=3)", "sgd (n=3)"}
    steps = np.arange(EVAL_EVERY, STEPS + 1, EVAL_EVERY, dtype=float)
    for optim in ("adam", "sgd"):
        by_hand = np.mean([[_kappa(optim, seed)(s) for s in steps] for seed in (0, 1, 2)], axis=0)
        np.testing.assert_array_equal(lines[f"{optim} (n=3)"].get_xdata(), steps)
        np.testing.assert_allclose(lines[f"{optim} (n=3)"].get_ydata(), by_hand, rtol=1e-12)
    bands = [np.asarray(c.get_paths()[0].vertices) for c in ax.collections]
    assert len(bands) == 2
    for vertices in bands:  # from seed 0 at the first step to seed 2 at the last
        ys = vertices[:, 1]
        assert np.isclose(ys.max() - ys.min(), 2 + (STEPS - EVAL_EVERY) / 100)
    assert plots.plot_series(cls, "not/logged", plots.colors(["adam", "sgd"]), root / "y.png") is None


def test_report_has_one_figure_per_task_and_series_in_markdown_and_html(root, tmp_path):
    out = tmp_path / "report"
    index = write_report([root], out, series=["optim/kappa", "instr/grad_stats/*"])
    names = sorted(p.name for p in out.glob("*-series-*.png"))
    assert names == ["cls-series-instr-grad_stats-norm.png", "cls-series-instr-grad_stats-var.png",
                     "cls-series-optim-kappa.png", "quad-series-optim-kappa.png"]  # fmt: skip
    markdown = (out / "report.md").read_text()
    for name in names:
        assert f"]({name})" in markdown
    html = index.read_text()
    assert html.count('alt="cls-series-') == 3 and html.count('alt="quad-series-') == 1
    cls_section = markdown.split("## Task `cls`")[1].split("## Task `quad`")[0]
    assert "cls-series-optim-kappa.png" in cls_section


def test_cli_series_flag(root, tmp_path, capsys):
    out = tmp_path / "cli"
    assert report_main([str(root), "--out", str(out), "--series", "optim/kappa"]) == 0
    assert (out / "cls-series-optim-kappa.png").is_file() and (out / "quad-series-optim-kappa.png").is_file()
    with pytest.raises(ConfigError, match="optim/kapa"):
        report_main([str(root), "--out", str(out), "--series", "optim/kapa"])
