"""``trace devchain``: bad input and an unreachable node print one line and exit non-zero."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from devstack.process import free_port
from operators.devchain.cli import app

runner = CliRunner()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [["traffic", "--blocks", "1"], ["reorg", "--depth", "1"], ["deploy"]])
def test_unreachable_rpc(command: list[str]) -> None:
    url = dead_url()
    result = runner.invoke(app, [*command, "--rpc-url", url])
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: JSON-RPC endpoint {url} is unreachable")


def test_rpc_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    url = dead_url()
    monkeypatch.setenv("TRACE_RPC_URL", url)
    result = runner.invoke(app, ["reorg", "--depth", "2"])
    assert result.exit_code == 1
    assert url in one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reorg", "--depth", "0"], "error: --depth must be >= 1, got 0"),
        (["traffic", "--tx-per-block", "-1"], "error: --tx-per-block must be >= 0"),
        (["traffic", "--blocks", "0"], "error: --blocks must be >= 1"),
        (["traffic", "--reorg-every", "-2"], "error: --reorg-every must be >= 0"),
        (["traffic", "--reorg-every", "5", "--reorg-min-depth", "3", "--reorg-max-depth", "2"],
         "error: reorg depths must satisfy"),
        (["traffic", "--rpc-url", "localhost:8545"], "error: --rpc-url must be an http(s) URL"),
    ],
)
def test_bad_input(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert one_error_line(result.stderr).startswith(message)
