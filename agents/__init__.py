"""Networks, learning algorithms, the rollout collector."""
