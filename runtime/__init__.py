"""Shared runtime helpers: configs, devices, seeding, logging, checkpoints, progress bars."""
