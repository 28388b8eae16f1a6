"""ml_collections configs of the experiments (`--config experiments/configs/<name>.py:<arg>`)."""
