import pytest

from optimlab.cli import main
from optimlab.report.cli import parse_targets
from optimlab.errors import ConfigError


def test_cli_writes_report(plan_root, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["report", str(plan_root / "quad"), "--out", str(out), "--baseline", "adam", "--target", "0.1"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    assert (out / "index.html").is_file() and (out / "best.csv").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["{empty}", "--out", "{out}"], "no runs found in"),
        (["{tmp}/missing", "--out", "{out}"], "no such run directory or folder"),
        (["{empty}"], "the following arguments are required: --out"),
        (["--out", "{out}"], "the following arguments are required: RUNS"),
        (["{empty}", "--out", "{out}", "--target", "abc"], "--target 'abc': expected a number"),
        (["{empty}", "--out", "{out}", "--select", "worst"], "invalid choice: 'worst'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    subst = {"empty": str(tmp_path / "empty"), "out": str(tmp_path / "out"), "tmp": str(tmp_path)}
    code = main(["report", *(a.format(**subst) for a in args)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("optimlab report: error: ") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_parse_targets():
    assert parse_targets([]) == (0.05, {})
    assert parse_targets(["0.2", "cls=0.85", "quad=1e-3"]) == (0.2, {"cls": 0.85, "quad": 1e-3})
    with pytest.raises(ConfigError):
        parse_targets(["cls=high"])
