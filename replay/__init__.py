"""Replay storage, samplers and writers (tensors on one device)."""
