"""Verifier: judges a candidate's business KPIs (shop events on Kafka) and HTTP KPIs (HAProxy request log)
over a window, against the stable version and the catalog's thresholds."""
