"""Reproducible studies built on initstate (run each as `python -m initstate.studies.NAME`)."""
