"""``modelyard monitor NAME``: traffic, drift and rule verdicts per version, as a table, JSON or HTML.

The report evaluates the same rules the server's scheduler does, over the same window, but records and
notifies nothing: it is a look, not an actor. Alerts the scheduler did record are listed beside it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from rich.console import Console
from rich.table import Table

from modelyard.monitor.alert_state import AlertBook
from modelyard.monitor.alerting import AlertRuleSet
from modelyard.monitor.alerts import load_overrides, rules_for
from modelyard.monitor.svg import hbar_chart, histogram_pair
from modelyard.monitor.window import RecordSource
from modelyard.registry import Registry
from modelyard.registry.outcomes import SqlOutcomeStore


def build_report(
    registry: Registry,
    records: RecordSource,
    name: str,
    *,
    window: timedelta = timedelta(hours=1),
    now: datetime | None = None,
    versions: set[int] | None = None,
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    since = now - window
    fetched = list(records(name, since, now))
    aliases = registry.aliases(name)
    if versions is None:
        versions = {a.version for a in aliases.values()} | {
            int(r.version) for r in fetched if r.model == name
        }
    alerts = AlertRuleSet(registry, lambda _m, _s, _u: fetched, window=window)
    out_versions = []
    overrides = load_overrides(registry.engine, name)
    for st in alerts.evaluate(name, versions, now):
        w, v = st.window, st.window.version
        out_versions.append(
            {
                "version": v,
                "aliases": sorted(a for a, r in aliases.items() if r.version == v),
                "requests": w.requests,
                "rows": len(w.rows),
                "errors": w.errors,
                "error_rate": w.error_rate,
                "latency_p50_ms": w.latency_quantile(0.5),
                "latency_p95_ms": w.latency_quantile(0.95),
                "drift": st.drift.to_dict() if st.drift else None,
                "quality": st.quality.to_dict() if st.quality else None,
                "rules": [
                    {
                        "rule": f.rule,
                        "feature": f.feature,
                        "status": "unknown" if f.firing is None else "firing" if f.firing else "ok",
                        "value": f.value,
                        "threshold": f.threshold,
                        "message": f.message,
                    }
                    for f in st.findings
                ],
                "thresholds": rules_for(alerts.manifest(name, v), overrides),
            }
        )
    counts = SqlOutcomeStore(registry.engine).counts(name, since=since)
    return {
        "model": name,
        "outcomes": {"matched": counts.matched, "unmatched": counts.unmatched, "late": counts.late},
        "since": since.isoformat(),
        "until": now.isoformat(),
        "window_seconds": window.total_seconds(),
        "versions": out_versions,
        "alerts": [_jsonable(a) for a in AlertBook(registry.engine).recent(name, limit=20)],
    }


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print(
        f"[bold]{report['model']}[/]: traffic from {report['since'][:19]} to {report['until'][:19]} UTC"
    )
    if not report["versions"]:
        console.print("no served versions and no logged traffic in this window")
    for v in report["versions"]:
        aliases = ", ".join(v["aliases"]) or "no alias"
        console.print(
            f"\n[bold]v{v['version']}[/] ({aliases}): {v['requests']} requests, {v['rows']} rows, "
            f"{v['errors']} errors ({v['error_rate']:.1%}), latency p50 {_fmt(v['latency_p50_ms'], '.1f')}"
            f" ms, p95 {_fmt(v['latency_p95_ms'], '.1f')} ms"
        )
        drift = v["drift"]
        if drift:
            psi_limit = v["thresholds"]["input_drift"]["psi"]
            table = Table(
                title=f"drift of v{v['version']} against its training reference ({drift['rows']} rows)"
            )
            for col, just in (
                ("feature", "left"),
                ("kind", "left"),
                ("PSI", "right"),
                ("KS", "right"),
                ("missing ref → now", "right"),
                ("", "left"),
            ):
                table.add_column(col, justify=just)  # type: ignore[arg-type]
            for fd in [*drift["features"].values(), *([drift["prediction"]] if drift["prediction"] else [])]:
                psi = fd["psi"]
                over = psi is not None and psi > psi_limit
                bar = "█" * min(int((psi or 0) / psi_limit * 10), 30)
                table.add_row(
                    fd["feature"],
                    fd["kind"],
                    f"[red]{psi:.3f}[/]" if over else _fmt(psi),
                    _fmt(fd["ks"]),
                    f"{fd['missing_reference']:.1%} → {fd['missing_current']:.1%}",
                    f"[red]{bar}[/]" if over else f"[green]{bar}[/]",
                )
            console.print(table)
        if v.get("quality"):
            print_quality(v["quality"], console)
        rules = Table(title=f"rules for v{v['version']}")
        for col in ("rule", "status", "value", "limit", "detail"):
            rules.add_column(col)
        for r in v["rules"]:
            if r["rule"] == "input_drift" and r["status"] == "ok":
                continue  # one line per drifting feature is enough; the table above has them all
            style = {"firing": "bold red", "ok": "green", "unknown": "dim"}[r["status"]]
            rules.add_row(
                r["rule"] + (f" ({r['feature']})" if r["feature"] else ""),
                f"[{style}]{r['status']}[/]",
                _fmt(r["value"], ".4g"),
                _fmt(r["threshold"], ".4g"),
                r["message"],
            )
        console.print(rules)
    oc = report.get("outcomes") or {}
    if any(oc.values()):
        console.print(f"\noutcomes in the window: {oc['matched']} joined to a prediction ({oc['late']} late), "
                      f"{oc['unmatched']} unmatched")
    firing = [a for a in report["alerts"] if a["status"] == "firing"]
    if firing:
        console.print(f"\n[bold red]{len(firing)} recorded alert(s) firing:[/]")
        for a in firing:
            console.print(f"  since {a['started_at'][:19]}  {a['message']}")


def print_quality(q: dict[str, Any], console: Console) -> None:
    """Live quality beside the held-out figures, with coverage, delay and (classifiers) the CBPE estimate."""
    coverage = "-" if q["coverage"] is None else f"{q['coverage']:.1%}"
    delay = "-" if q["delay_p50_s"] is None else f"{q['delay_p50_s']:.0f}s (p90 {q['delay_p90_s']:.0f}s)"
    console.print(f"live quality of v{q['version']}: {q['labelled']} labelled rows, coverage {coverage}, "
                  f"label delay {delay}, {q['late']} late")
    if not q["metrics"] and not q["estimated"]:
        return
    table = Table(title=f"quality of v{q['version']}: live against held out")
    for col in ("metric", "live", "held out", "estimated (CBPE)"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    names = [*q["metrics"], *[k for k in q["heldout"] if k not in q["metrics"]]]
    if "accuracy" in q["estimated"] and "accuracy" not in names:
        names.append("accuracy")
    for name in names:
        est = q["estimated"].get(name) if name == "accuracy" else None
        table.add_row(name, _fmt(q["metrics"].get(name), ".4g"), _fmt(q["heldout"].get(name), ".4g"),
                      _fmt(est, ".4g") + (f" (labelled rows: {_fmt(q['estimated'].get('accuracy_labelled'), '.4g')})"
                                          if est is not None and "accuracy_labelled" in q["estimated"] else ""))
    console.print(table)


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page: inline SVG charts, no script, no network."""
    body = [
        f"<h1>{escape(report['model'])}</h1><p class=muted>traffic from {escape(report['since'][:19])} to "
        f"{escape(report['until'][:19])} UTC</p>"
    ]
    for v in report["versions"]:
        body.append(
            f"<h2>v{v['version']} <small>{escape(', '.join(v['aliases']) or 'no alias')}</small></h2>"
        )
        body.append(
            "<div class=stats>"
            + "".join(
                f"<div><b>{escape(str(val))}</b><span>{escape(label)}</span></div>"
                for label, val in (
                    ("requests", v["requests"]),
                    ("rows", v["rows"]),
                    ("error rate", f"{v['error_rate']:.1%}"),
                    ("p50 latency", _fmt(v["latency_p50_ms"], ".1f") + " ms"),
                    ("p95 latency", _fmt(v["latency_p95_ms"], ".1f") + " ms"),
                )
            )
            + "</div>"
        )
        firing = [r for r in v["rules"] if r["status"] == "firing"]
        body.append(
            "<ul class=alerts>" + "".join(f"<li>{escape(r['message'])}</li>" for r in firing) + "</ul>"
            if firing
            else "<p class=ok>no rule is firing</p>"
        )
        drift = v["drift"]
        if not drift:
            body.append("<p class=muted>no traffic in this window: no drift to measure</p>")
            continue
        feats = [*drift["features"].values(), *([drift["prediction"]] if drift["prediction"] else [])]
        body.append(
            hbar_chart(
                [f["feature"] for f in feats],
                [f["psi"] for f in feats],
                threshold=v["thresholds"]["input_drift"]["psi"],
                title="PSI per feature",
            )
        )
        ranked = sorted(feats, key=lambda f: -(f["psi"] or 0))
        body.append(
            "<div class=grid>"
            + "".join(
                histogram_pair(
                    f["labels"],
                    f["reference"],
                    f["current"],
                    title=f"{f['feature']}  PSI {_fmt(f['psi'])}  KS {_fmt(f['ks'])}",
                )
                for f in ranked
            )
            + "</div>"
        )
    if report["alerts"]:
        body.append(
            "<h2>recorded alerts</h2><table><tr><th>started</th><th>status</th><th>message</th></tr>"
            + "".join(
                f"<tr class={a['status']}><td>{escape(str(a['started_at'])[:19])}</td><td>{a['status']}</td>"
                f"<td>{escape(a['message'] or '')}</td></tr>"
                for a in report["alerts"]
            )
            + "</table>"
        )
    title = escape(report["model"])
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>modelyard monitor: {title}</title>'
        f"<style>{CSS}</style></head><body>{''.join(body)}"
        f'<script type="application/json" id="report">{_dumps(report)}</script></body></html>'
    )


CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#111}.muted{color:#666}
small{color:#666;font-weight:400}.stats{display:flex;gap:24px;margin:8px 0}
.stats div{display:flex;flex-direction:column}.stats b{font-size:20px}.stats span{color:#666;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:8px}.alerts li{color:#dc2626}.ok{color:#16a34a}
table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:1px solid #eee;text-align:left}
tr.firing td{color:#dc2626}"""


def _dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, default=str).replace("</", "<\\/")  # cannot close the script element
