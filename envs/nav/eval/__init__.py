"""Scoring navigation: the R2R metrics (as the official evaluator computes them) and the failure breakdown."""
