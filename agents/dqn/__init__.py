"""DQN for Atari with the Rainbow-family switches (double, dueling, n-step, prioritized replay)."""
