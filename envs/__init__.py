"""Environments: the vector-env protocol, Atari, the navigation world and simulator."""


def register() -> None:
    """Register the gymnasium ids (``Lodestar/Atari-v0``, ...); importing ``envs.gym_api`` does it too."""
    from envs.gym_api import register as register_ids

    register_ids()
