from __future__ import annotations

from medfm.cli import main


def test_demo_environment_step_writes_linked_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output_dir", str(out), "--only", "environment"]) == 0
    html = (out / "report.html").read_text()
    assert "href='environment/report.html'" in html and "ok (" in html
    env_html = (out / "environment" / "report.html").read_text()
    assert "Offline assets" in env_html and "smollm2" in env_html


def test_demo_unknown_step_is_usage_error(tmp_path, capsys):
    assert main(["demo", "--output_dir", str(tmp_path), "--only", "nope"]) == 2
    assert "unknown demo step" in capsys.readouterr().err
