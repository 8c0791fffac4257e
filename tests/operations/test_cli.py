"""The operations options of the command line: ``offload dashboard`` refuses to be open to other machines."""

from __future__ import annotations

from click.testing import CliRunner

from offload.cli import main


def test_the_dashboard_needs_auth_off_loopback() -> None:
    result = CliRunner().invoke(main, ["dashboard", "--url", "memory://cli", "--bind", "0.0.0.0:0"])
    assert result.exit_code != 0
    assert "--auth" in result.output


def test_the_worker_has_metrics_and_log_format_options() -> None:
    result = CliRunner().invoke(main, ["worker", "--help"])
    assert "--metrics-port" in result.output and "--log-format" in result.output
