"""The collector's HTTP side: dashboard, snapshot pages, diagrams, JSON API, /metrics."""
