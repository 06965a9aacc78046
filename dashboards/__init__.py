"""Dashboards (package `millivid_dashboards`): the comparison site built from MLflow runs
(`site.build_site`, `millivid report`, the pipeline's report stage) and, in grafana/, a Grafana
dashboard for Ray's Prometheus metrics. See docs/dashboards.md."""
