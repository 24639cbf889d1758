"""Sensors that turn events into media_ids partitions and runs."""
