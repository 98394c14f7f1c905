"""HTML views of runs: one self-contained trajectory page per run, and the bench index page.

``trajectory_html`` renders source -> each tried edit (planner text, tool and seed, critic
scores, accepted or rejected and why, the regions drawn on the image, timings) -> result, with
every image embedded as a ``data:`` URL, so the page is one file that opens anywhere.
``bench_index_html`` renders ``mira-bench``'s grid (every cell links to its trajectory page),
the summary table and a failures-only view (``index.html#failures``). Templates: jinja2,
``agent/templates/``; every value is auto-escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.artifacts import ArtifactStore

__all__ = ["trajectory_html", "bench_index_html", "step_regions"]


def _env() -> Any:
    try:
        import jinja2
    except ImportError as exc:  # a core dependency; a broken install says what to do
        raise ImportError("the HTML report needs jinja2: pip install jinja2") from exc
    return jinja2.Environment(
        loader=jinja2.PackageLoader("agent", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _data_url(store: ArtifactStore | None, ref: Mapping[str, Any] | None) -> str | None:
    """The PNG of ``ref`` as a data: URL; None when there is no ref or it is not stored."""
    if store is None or not ref:
        return None
    try:
        data = store.read_bytes(ref)  # type: ignore[arg-type]
    except (ValueError, FileNotFoundError, TypeError):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def step_regions(step: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The regions a step used, pixel XYXY: MIRAGE's (``info.regions``) and the user's
    (``info.user_region.boxes``), each with a label."""
    info = step.get("info") or {}
    out = []
    for r in info.get("regions") or []:
        box = r.get("snapped_box") or r.get("box")
        if box:
            label = r.get("expression") or "region"
            out.append({"box": list(box), "label": label, "kind": "mirage"})
    for box in (info.get("user_region") or {}).get("boxes") or []:
        out.append({"box": list(box), "label": "user region", "kind": "user"})
    return out


def _overall(scores: Mapping[str, Any] | None, key: str) -> float | None:
    part = (scores or {}).get(key) or {}
    return part.get("overall")


def trajectory_html(
    *,
    instruction: str,
    source: Mapping[str, Any] | None,
    result: Mapping[str, Any] | None,
    steps: Sequence[Mapping[str, Any]],
    stop_reason: str,
    store: ArtifactStore | None,
    title: str = "MIRA trajectory",
    scores: Mapping[str, Any] | None = None,
    elapsed_s: float | None = None,
    notes: Sequence[Mapping[str, Any]] = (),
) -> str:
    """One run as a self-contained HTML page. ``steps`` are the graph's ``StepRecord``s;
    ``notes`` are extra rows for runs that are not the agent's (e.g. best-of-n tries)."""
    rows = []
    for s in steps:
        args = s.get("args") or {}
        planner = s.get("planner") or {}
        rows.append(
            {
                "kind": s.get("kind"),
                "label": f"{s.get('step')}.{(s.get('attempt') or 0) + 1}",
                "instruction": args.get("instruction")
                or (planner.get("action") or {}).get("instruction"),
                "planner": planner.get("raw"),
                "reviewer": planner.get("reviewer"),
                "tool": s.get("tool"),
                "seed": args.get("seed"),
                "step_score": _overall(s.get("scores"), "step"),
                "progress_score": _overall(s.get("scores"), "progress"),
                "accepted": bool(s.get("accepted")),
                "reason": s.get("reason") or "",
                "timings": {k: round(float(v), 3) for k, v in (s.get("timings") or {}).items()},
                "input": _data_url(store, s.get("input")),
                "output": _data_url(store, s.get("output")),
                "width": (s.get("input") or s.get("output") or {}).get("width") or 1,
                "height": (s.get("input") or s.get("output") or {}).get("height") or 1,
                "regions": step_regions(s),
            }
        )
    return (
        _env()
        .get_template("trajectory.html.j2")
        .render(
            title=title,
            instruction=instruction,
            stop_reason=stop_reason,
            source=_data_url(store, source),
            result=_data_url(store, result),
            overall=(scores or {}).get("overall"),
            elapsed_s=elapsed_s,
            steps=rows,
            accepted=sum(1 for r in rows if r["kind"] == "edit" and r["accepted"]),
            tried=sum(1 for r in rows if r["kind"] == "edit"),
            notes=[dict(n) for n in notes],
        )
    )


def bench_index_html(
    *,
    title: str,
    summary: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    total: int,
) -> str:
    """The bench index: ``summary`` rows (one per strategy: name and formatted values), and
    the grid ``rows`` ({"id", "instruction", "failed", "cells": [{"image", "link", "verdict",
    "note"}]}); ``columns`` names the grid's image columns."""
    return (
        _env()
        .get_template("bench_index.html.j2")
        .render(
            title=title,
            summary=[dict(s) for s in summary],
            columns=list(columns),
            rows=[dict(r) for r in rows],
            total=total,
            failures=sum(1 for r in rows if r["failed"]),
        )
    )
