"""``sentiment model add|list|promote|shadow|rollback``: the model store as its user sees it. Only printing: the
operations and their decisions are ``stream.lifecycle.model_lifecycle``'s (the SQL is in ``stream.lifecycle.model_store``, the checks
in ``stream.lifecycle.model_gate``, the worker's side in ``stream.lifecycle.model_swap``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.settings import Settings
from stream.lifecycle import model_lifecycle, model_store
from stream.sql.db import database_engine


def add(
    settings: Settings, folder: Path, out=None, *, allow_tensorflow: bool = False, without_metrics: bool = False
) -> str:
    """``sentiment model add``: prints what :func:`stream.lifecycle.model_lifecycle.add` did; returns the version."""
    out = out or sys.stdout
    engine = database_engine(settings)
    try:
        added = model_lifecycle.add(
            engine, settings, folder, allow_tensorflow=allow_tensorflow, without_metrics=without_metrics
        )
    finally:
        engine.dispose()
    if added.manifest is None:
        print(f"{added.version} is already in the model store (a version is its content: nothing changed)", file=out)
    else:
        print(f"added {added.version} from {folder}: {describe(added.manifest, added.size)}", file=out)
        if added.manifest.get("scoring") == "tensorflow":
            print("workers will score it with TensorFlow (--allow-tensorflow)", file=out)
    if added.left_out:
        print(f"left out (not files of a training run): {', '.join(added.left_out)}", file=out)
    if added.seeded:
        print(
            f"the store had no live version: {added.seeded} ({added.seeded_from}, what workers run until a promote) "
            "is live",
            file=out,
        )
    return added.version


def describe(manifest: dict, size: int) -> str:
    parts = [f"{len(manifest.get('files', []))} files, {size / 1e6:.1f} MB"]
    for split in ("validation", "test"):
        accuracy = (manifest.get(split) or {}).get("accuracy")
        if accuracy is not None:
            parts.append(f"{split} accuracy {accuracy:.4f}")
    parts.append(f"canary accuracy {manifest['canary']['accuracy']:.3f}")
    return ", ".join(parts)


def list_store(settings: Settings, as_json: bool, out=None) -> None:
    out = out or sys.stdout
    engine = database_engine(settings)
    try:
        stored = model_store.versions(engine)
        wanted = model_store.wanted(engine)
        history = model_store.history(engine, 10)
        workers = model_store.running_workers(engine, worker_timeout(settings))
    finally:
        engine.dispose()
    if as_json:
        print(_store_json(stored, wanted, history, workers), file=out)
        return
    if not stored:
        print(f"the model store is empty; workers run the configured model ({settings.model})", file=out)
        print("  add one: sentiment model add runs/NAME-VERSION/", file=out)
        return
    print(
        f"{'version':<13} {'role':<11} {'added (UTC)':<17} {'by':<24} {'val acc':>7} {'test acc':>8} {'canary':>6}",
        file=out,
    )
    for v in stored:
        m = v.manifest
        role = ",".join(roles_of(v.version, wanted)) or "-"
        print(
            f"{v.version:<13} {role:<11} {v.added_at:%Y-%m-%d %H:%M} {v.added_by[:24]:<24} "
            f"{_accuracy(m.get('validation')):>7} {_accuracy(m.get('test')):>8} {m['canary']['accuracy']:>6.3f}",
            file=out,
        )
    for role, assignment in (("live", wanted.live), ("shadow", wanted.shadow)):
        if assignment is None:
            what = "never set (workers run the configured model)" if role == "live" else "off"
        else:
            what = f"{assignment.version or 'off'} since {assignment.set_at:%Y-%m-%d %H:%M:%S} by {assignment.set_by}"
        print(f"{role}: {what}", file=out)
    print("history (newest first):", file=out)
    for a in history:
        nothing = "none" if a.role == "live" else "off"
        print(
            f"  {a.set_at:%Y-%m-%d %H:%M:%S} {a.action:<8} {a.role:<6} {a.previous or nothing} -> {a.version or 'off'}"
            f"  by {a.set_by}",
            file=out,
        )
    print(f"workers seen in the last {worker_timeout(settings):.0f} s: {len(workers)}", file=out)
    for w in workers:
        refused = f"; refused {w.refused}" if w.refused else ""
        loading = f"; loading {w.loading} since {w.loading_since:%H:%M:%S} UTC" if w.loading and w.loading_since else ""
        print(f"  {w.worker}: live {w.live}, shadow {w.shadow or 'off'}{loading}{refused}", file=out)
        if w.evidence:
            print(f"    {w.evidence}", file=out)


def _store_json(stored, wanted: model_store.Wanted, history, workers) -> str:
    return json.dumps(
        {
            "versions": [
                {
                    "version": v.version,
                    "sha256": v.sha256,
                    "bytes": v.size_bytes,
                    "added_at": v.added_at.isoformat(),
                    "added_by": v.added_by,
                    "roles": roles_of(v.version, wanted),
                    "manifest": {k: val for k, val in v.manifest.items() if k != "canary"}
                    | {"canary_accuracy": v.manifest["canary"]["accuracy"]},
                }
                for v in stored
            ],
            "live": _assignment_json(wanted.live),
            "shadow": _assignment_json(wanted.shadow),
            "history": [_assignment_json(a) for a in history],
            "workers": [w.__dict__ | {"seen_at": w.seen_at.isoformat()} for w in workers],
        },
        indent=2,
        default=str,
    )


def roles_of(version: str, wanted: model_store.Wanted) -> list[str]:
    return [role for role, v in (("live", wanted.live_version), ("shadow", wanted.shadow_version)) if v == version]


def _accuracy(split: dict | None) -> str:
    value = (split or {}).get("accuracy")
    return "-" if value is None else f"{value:.4f}"


def _assignment_json(a: model_store.Assignment | None) -> dict | None:
    return None if a is None else a.__dict__ | {"set_at": a.set_at.isoformat()}


def worker_timeout(settings: Settings) -> float:
    return model_lifecycle.worker_timeout(settings)


def promote(settings: Settings, version: str, *, offline: bool, wait: float, out=None) -> int:
    return _switched(settings, lambda e: model_lifecycle.promote(e, settings, version, wait=wait, offline=offline), out)


def rollback(settings: Settings, *, offline: bool, wait: float, out=None) -> int:
    return _switched(settings, lambda e: model_lifecycle.rollback(e, settings, wait=wait, offline=offline), out)


def shadow(settings: Settings, version: str | None, out=None, *, wait: float = 60.0) -> int:
    return _switched(settings, lambda e: model_lifecycle.shadow(e, settings, version, wait=wait), out)


def _switched(settings: Settings, operation, out) -> int:
    out = out or sys.stdout
    engine = database_engine(settings)
    try:
        outcome = operation(engine)
    finally:
        engine.dispose()
    show_outcome(outcome, out)
    return outcome.exit_code


def show_outcome(o: model_lifecycle.Outcome, out) -> None:
    """The outcome of a switch, as lines: what was assigned, each worker's answer, what the store says now."""
    off = "none" if o.role == "live" else "off"
    if o.already:
        print(f"the {o.role} version is already {o.version or off}", file=out)
        return
    if o.seeded:
        print(f"the store had no live version: {o.seeded} (the configured model) is live", file=out)
    print(f"{o.action}: {o.role} {o.previous or off} -> {o.version or off}", file=out)
    if o.no_workers:
        print("no worker is running: workers load it when they start", file=out)
        return
    if not o.workers:
        return
    ran = sum(a.runs for a in o.workers)
    where = out if o.confirmed else sys.stderr
    print(f"{ran} of {len(o.workers)} workers run {o.version or 'no shadow'} after {o.waited:.1f} s", file=where)
    for a in o.workers:
        if not a.runs:
            print(f"  {a.worker} {a.says}", file=where)
    if o.confirmed:
        return
    if o.reverted:
        print(f"{o.role} is back to {o.reverted_to or off}, the version the workers run", file=sys.stderr)
    else:
        print(f"{o.role} was assigned again meanwhile: left as it is", file=sys.stderr)


def add_and_promote(settings: Settings, folder: Path, out=None) -> None:
    """``sentiment train --promote``: the new run goes into the store and becomes live (for workers running now,
    at once; for the others, when they start)."""
    out = out or sys.stdout
    version = add(settings, folder, out)
    engine = database_engine(settings)
    try:
        outcome = model_lifecycle.promote(engine, settings, version, wait=60.0, offline=True)
    finally:
        engine.dispose()
    show_outcome(outcome, out)
