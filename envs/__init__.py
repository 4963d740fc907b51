"""Environments: the vector-env protocol, Atari, the navigation world and simulator."""
