"""Training: state, jitted steps, data mesh, input pipeline, checkpoints, logs, the trainer."""
