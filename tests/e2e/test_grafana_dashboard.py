"""config/grafana-dashboard.json is built on the metric names of docs/metrics.md: every metric a
panel queries is a documented family (with the sample suffix its type has), every label it
groups or filters by is one that family has, and every documented family has a panel."""

import json
import re

from conftest import REPO
from test_metrics import documented

DASHBOARD = REPO / "config" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
METRIC = re.compile(r"\b(corvid_[a-z0-9_]+)(\{[^}]*\})?")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def panels() -> list[dict]:
    d = json.loads(DASHBOARD.read_text())
    assert d["__inputs"][0]["pluginId"] == "prometheus"
    out = [p for p in d["panels"] if p["type"] != "row"]
    assert out and all(p["targets"] for p in out)
    return out


def family_of(sample: str, doc: dict) -> str | None:
    for name, (kind, _) in doc.items():
        if any(sample == name + s for s in SUFFIXES[kind]):
            return name
    return None


def test_every_queried_metric_and_label_is_documented():
    doc = documented()
    assert len(doc) > 15, "the doc tables were not read"
    seen = set()
    for p in panels():
        for t in p["targets"]:
            expr = t["expr"]
            families = []
            for sample, matchers in METRIC.findall(expr):
                family = family_of(sample, doc)
                assert family, f"panel {p['title']!r}: {sample} is not in docs/metrics.md (with its type's suffix)"
                families.append(family)
                labels = set(re.findall(r"([a-z_]+)\s*!?[=~]", matchers))
                assert labels <= doc[family][1], f"panel {p['title']!r}: {sample} has no label {labels - doc[family][1]}"
            assert families, f"panel {p['title']!r} queries no corvid metric: {expr}"
            seen.update(families)
            allowed = set.union(*(doc[f][1] for f in families))
            if any(doc[f][0] == "histogram" for f in families):
                allowed.add("le")  # the bucket label of every histogram
            for group in GROUPING.findall(expr):
                labels = {l.strip() for l in group.split(",") if l.strip()}
                assert labels <= allowed, f"panel {p['title']!r}: grouped by {labels - allowed}, not a label of {families}"
            for used in re.findall(r"\{\{(\w+)\}\}", t.get("legendFormat", "")):
                assert used in allowed, f"panel {p['title']!r}: legend names {used}"
    assert seen == set(doc), f"documented but on no panel: {set(doc) - seen}"


def test_the_check_catches_an_undocumented_name(tmp_path, monkeypatch):
    """The check above can fail: a renamed metric is caught."""
    bad = DASHBOARD.read_text().replace("corvid_dsns_total", "corvid_dsn_sent_total")
    path = tmp_path / "dash.json"
    path.write_text(bad)
    monkeypatch.setattr(__import__(__name__), "DASHBOARD", path)
    try:
        test_every_queried_metric_and_label_is_documented()
    except AssertionError as e:
        assert "corvid_dsn_sent_total" in str(e)
    else:
        raise AssertionError("an undocumented metric passed")
