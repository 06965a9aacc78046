"""Reports and dashboards (package `millivid_dashboards`): HTML pages built from MLflow runs."""
