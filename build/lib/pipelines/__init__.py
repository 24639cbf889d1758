"""The Beam side: per-item processing and the transforms that run it. Nothing here imports Dagster."""
