"""Environments: the vector-env protocol, Atari over ale-py, the gymnasium and SB3 faces, navigation."""
