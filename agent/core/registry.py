"""Finding checks: built-in modules, third-party entry points, and config command checks."""

from __future__ import annotations

import fnmatch
import importlib
import math
import pkgutil
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import partial
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from snapshot_agent.config import LoadedConfig
from snapshot_agent.core.check import Check, Requirements, ThresholdValue
from snapshot_agent.core.custom import command_check
from snapshot_agent.errors import UsageError

ENTRY_POINT_GROUP = "snapshot_agent.checks"


def builtin_checks() -> list[Check]:
    """Every Check declared at module level in snapshot_agent.checks.*."""
    import snapshot_agent.checks as package

    found: list[Check] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found += _checks_in(module)
    return found


def plugin_checks() -> list[Check]:
    """Checks from installed distributions' `snapshot_agent.checks` entry points.

    A plugin that fails to load becomes a check that reports the failure as `error`,
    so a broken plugin is visible in the report instead of breaking the snapshot.
    """
    found: list[Check] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            items = _checks_in(loaded) if isinstance(loaded, ModuleType) else loaded
            if isinstance(items, Check):
                items = [items]
            for item in items:
                if not isinstance(item, Check):
                    raise TypeError(f"entry point {ep.name} gave {type(item).__name__}, not Check")
                found.append(replace(item, source=f"plugin:{ep.name}"))
        except Exception:
            found.append(_broken_plugin(ep.name, traceback.format_exc()))
    return found


def config_checks(loaded: LoadedConfig) -> list[Check]:
    """Custom command checks from `checks.commands`."""
    return [command_check(spec) for spec in loaded.config.checks.commands]


def all_checks(loaded: LoadedConfig) -> list[Check]:
    """Built-in, plugin and config checks, sorted by id; duplicate ids are refused."""
    checks: dict[str, Check] = {}
    for item in builtin_checks() + plugin_checks():
        if item.id in checks:
            raise UsageError(
                f"check {item.id} is declared twice ({checks[item.id].source} and {item.source}); "
                "uninstall or rename one of the plugins"
            )
        checks[item.id] = item
    for index, item in enumerate(config_checks(loaded)):
        # Two commands with one id are refused by load_config, naming both lines.
        if (taken := checks.get(item.id)) is not None:
            owner = "a built-in check id" if taken.source == "builtin" else "a check id"
            if taken.source != "builtin":
                owner += f" from {taken.source}"
            raise loaded.error(
                ("checks", "commands", index, "id"),
                f"{item.id!r} is already {owner}; choose another, e.g. custom.NAME",
            )
        checks[item.id] = item
    validate_thresholds(loaded, checks)
    return [checks[k] for k in sorted(checks)]


def select(checks: Sequence[Check], only: Iterable[str], skip: Iterable[str]) -> list[Check]:
    """Apply --only/--skip: each pattern is an id, a category, or a glob like 'cpu.*'.

    A pattern that matches nothing, and a selection that leaves nothing to run, are
    refused: a snapshot of no checks would pass while looking at nothing.
    """
    only, skip = list(only), list(skip)
    for pattern in only + skip:
        if not any(_matches(c, pattern) for c in checks):
            valid = ", ".join(c.id for c in checks)
            raise UsageError(f"no check matches {pattern!r}; valid ids: {valid}")
    chosen = [c for c in checks if not only or any(_matches(c, p) for p in only)]
    chosen = [c for c in chosen if not any(_matches(c, p) for p in skip)]
    if not chosen:
        asked = " with ".join(
            f"{flag} {','.join(patterns)}"
            for flag, patterns in (("--only", only), ("--skip", skip))
            if patterns
        )
        raise UsageError(
            f"nothing to run: {asked or 'the selection'} leaves no check; "
            "skip fewer checks or select more"
        )
    return chosen


def split_patterns(values: Iterable[str] | None, option: str = "--only/--skip") -> list[str]:
    """Accept both `--only a,b` and `--only a --only b`; refuse an empty pattern.

    An empty `--only` (an unset shell variable, a stray comma) would otherwise select
    every check instead of the few that were meant.
    """
    patterns: list[str] = []
    for value in values or ():
        for piece in value.split(","):
            if not piece.strip():
                raise UsageError(
                    f"{option} {value!r}: an empty pattern; name check ids, categories "
                    "or globs (`snapshot-agent checks` lists them)"
                )
            patterns.append(piece.strip())
    return patterns


def validate_thresholds(loaded: LoadedConfig, checks: dict[str, Check]) -> None:
    """Refuse unknown checks and threshold names, wrong types, and bands the wrong way round."""
    for check_id, values in loaded.config.checks.thresholds.items():
        loc: tuple[str | int, ...] = ("checks", "thresholds", check_id)
        declared = checks.get(check_id)
        if declared is None:
            raise loaded.error(loc, "no such check; see `snapshot-agent checks` for ids")
        for name, value in values.items():
            if name not in declared.thresholds:
                valid = ", ".join(sorted(declared.thresholds)) or "none"
                raise loaded.error((*loc, name), f"unknown threshold; {check_id} has: {valid}")
            if not _same_kind(declared.thresholds[name], value):
                expected = type(declared.thresholds[name]).__name__
                raise loaded.error((*loc, name), f"should be {expected} (got {value!r})")
            if isinstance(value, float) and not math.isfinite(value):
                raise loaded.error((*loc, name), f"should be a finite number (got {value!r})")
        merged = {**declared.thresholds, **values}
        for band in declared.bands:
            problem = band.misordered(merged)
            if problem:
                key = band.warn_key if band.warn_key in values else band.fail_key
                raise loaded.error((*loc, key), problem)


def thresholds_for(check: Check, loaded: LoadedConfig) -> dict[str, Any]:
    """The check's declared thresholds overlaid with the config's."""
    return {**check.thresholds, **loaded.config.checks.thresholds.get(check.id, {})}


def _same_kind(default: ThresholdValue, value: ThresholdValue) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def _matches(check: Check, pattern: str) -> bool:
    return (
        check.id == pattern or check.category == pattern or fnmatch.fnmatchcase(check.id, pattern)
    )


def _checks_in(module: ModuleType) -> list[Check]:
    return [v for v in vars(module).values() if isinstance(v, Check)]


def _broken_plugin(name: str, tb: str) -> Check:
    return Check(
        id=f"plugin.{name.lower().replace(' ', '_')}",
        category="plugin",
        title=f"Plugin {name}",
        description="A third-party check plugin that could not be loaded.",
        run=partial(_raise_load_error, name, tb),
        requires=Requirements(linux=False),
        source=f"plugin:{name}",
    )


def _raise_load_error(name: str, tb: str, _ctx: object) -> Any:
    raise RuntimeError(f"plugin {name!r} failed to load:\n{tb}")
