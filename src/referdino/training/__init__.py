"""Training: freezing policy, optimisation, checkpoints."""
