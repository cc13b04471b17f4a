"""The dashboards of panels.py as Grafana JSON, through grafana-foundation-sdk's builders."""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard as DashboardBuilder
from grafana_foundation_sdk.builders.dashboard import DatasourceVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery as PrometheusQuery
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from distinfer.dashboards.panels import DASHBOARDS, DashboardSpec, PanelSpec

# Every panel asks the Prometheus chosen in the dashboard's `datasource` variable.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
REF_IDS = "ABCDEFGH"


def _panel(spec: PanelSpec) -> Timeseries:
    panel = Timeseries().title(spec.title).unit(spec.unit).datasource(DATASOURCE).min(0)
    if spec.description:
        panel = panel.description(spec.description)
    for ref, query in zip(REF_IDS, spec.queries, strict=False):
        panel = panel.with_target(
            PrometheusQuery().expr(query.expr).legend_format(query.legend).ref_id(ref).datasource(DATASOURCE)
        )
    return panel


def build(spec: DashboardSpec) -> dict[str, Any]:
    builder = (
        DashboardBuilder(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["distinfer", "generated"])
        .refresh("10s")
        .time("now-30m", "now")
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for row in spec.rows:
        builder = builder.with_row(Row(row.title))
        for panel in row.panels:
            builder = builder.with_panel(_panel(panel))
    data: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    return data


def all_dashboards() -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON (as Grafana imports it, and as the sidecar ConfigMaps hold it)."""
    return {spec.uid: build(spec) for spec in DASHBOARDS}
