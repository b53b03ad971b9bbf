"""Custom command checks declared in the config (`checks.commands`)."""

from __future__ import annotations

from functools import partial
from typing import Any

from snapshot_agent.config import CommandCheckConfig
from snapshot_agent.core.check import Check, Requirements
from snapshot_agent.core.context import Context
from snapshot_agent.core.results import Finding, Result, Severity, Status

#: Time the runner allows past the command's own timeout, so the command is killed by
#: the check (keeping its partial output) rather than the check by the runner.
GRACE_S = 2.0


def command_check(spec: CommandCheckConfig) -> Check:
    """A Check that runs `spec.command`; non-zero exit fails, output is kept as evidence."""
    program = spec.command[0]
    requires = (
        Requirements(paths=(program,))
        if program.startswith("/")
        else Requirements(binaries=(program,))
    )
    return Check(
        id=spec.id,
        category=spec.id.split(".", 1)[0],
        title=spec.title,
        description=spec.description or f"Runs `{' '.join(spec.command)}` (from the config).",
        run=partial(_run, spec),
        requires=requires,
        timeout_s=spec.timeout_s + GRACE_S,
        source="config",
    )


def _run(spec: CommandCheckConfig, ctx: Context) -> Result:
    result = ctx.run(
        spec.command, timeout_s=spec.timeout_s, save_as="output.txt", pass_env=spec.pass_env
    )
    data = {"argv": result.argv, "exit_code": result.exit_code, "duration_ms": result.duration_ms}
    if result.timed_out:
        return _timed_out(spec, ctx, result.duration_ms / 1000, data)
    if result.ok:
        return Result(Status.PASS, result.describe(), data=data)
    last = result.last_line(200)
    message = result.describe() + (f": {last}" if last else "")
    return Result(
        Status.FAIL,
        message,
        [
            Finding(
                Severity.FAIL, message, "See raw/" + spec.id + "/output.txt for the full output."
            )
        ],
        data,
    )


def _timed_out(
    spec: CommandCheckConfig, ctx: Context, took_s: float, data: dict[str, Any]
) -> Result:
    """A command that was killed: by its own timeout, or earlier by the snapshot deadline.

    ctx.run clips the timeout to the time the check has left, so a command killed before
    its own timeout was stopped by the deadline: say so, with the time it really ran.
    """
    cmd = " ".join(spec.command)
    if took_s < spec.timeout_s:
        deadline = ctx.config.checks.deadline_s
        summary = (
            f"`{cmd}` was stopped at the snapshot deadline ({deadline:g} s) after {took_s:.1f} s"
        )
        hint = (
            f"The snapshot ended before this command's timeout_s ({spec.timeout_s:g} s): "
            f"run `{cmd}` by hand to see where it blocks, lower its timeout_s, or raise "
            "checks.deadline_s."
        )
    else:
        summary = f"`{cmd}` did not finish within {spec.timeout_s:g} s and was killed"
        hint = (
            f"Run `{cmd}` by hand to see where it blocks; raise timeout_s for this command "
            "in the config if it is just slow."
        )
    return Result(Status.TIMEOUT, summary, [Finding(Severity.FAIL, summary, hint, cmd)], data)
