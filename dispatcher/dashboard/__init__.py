"""Operator views: the dashboard and the Prometheus metrics endpoint."""
