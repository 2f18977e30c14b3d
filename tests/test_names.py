"""A study's name becomes a folder only after a check: a shared store may hold experiments
named anything, and reading one must never write outside reports/ and figures/."""

import pytest

from irrepro import report, tuning
from irrepro.names import folder_name


@pytest.mark.parametrize("name", ["single_units", "sources_tiny", "v1.2-test", "a..b"])
def test_plain_names_name_a_folder(name):
    assert folder_name(name, "--experiment") == name


@pytest.mark.parametrize("name", ["/some/dir", "../up", "..", ".", "a/b", "a\\\\b", "", "x y",
                                  "tab\\there"])
def test_names_that_are_not_one_folder_are_refused_naming_the_key(name):
    with pytest.raises(ValueError, match=r"--experiment=.* cannot name a folder"):
        folder_name(name, "--experiment")


def test_neither_the_analysis_nor_the_pareto_report_writes_outside_its_folders(tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.png").write_bytes(b"png")
    with pytest.raises(ValueError, match="--experiment="):
        report.analyze(None, str(outside), tmp_path / "reports", tmp_path / "figures")
    with pytest.raises(ValueError, match="--optuna-study="):
        tuning.pareto_report("sqlite:///nowhere.db", "../precious", tmp_path / "reports",
                             tmp_path / "figures")
    assert [p.name for p in outside.iterdir()] == ["keep.png"]
    assert not (tmp_path / "reports").exists() and not (tmp_path / "figures").exists()
