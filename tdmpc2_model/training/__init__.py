"""Training an agent: the online loop (replay buffer, random streams), Lightning
pretraining with its console output, and resuming from a run's checkpoints."""
