"""Training: state, jitted steps, data mesh, input pipeline, checkpoints, logs, the trainer.

state.py           TrainState (step, params, batch_stats, prototypes, opt_state), step_rng
optim.py           optax optimisers and learning-rate schedules
mesh.py            one-axis `data` mesh, shardings, multi-host init, global batches
input_pipeline.py  host numpy batches: padding to capacity buckets, per-sample RNG, resume
steps.py           jitted train step (L0 + LEAK) and eval step (confusion matrix)
checkpoint.py      Orbax CheckpointManager, resume order
logging.py         metrics.jsonl (+ TensorBoard via tensorboardX), progress, non-finite stop
trainer.py         train(), evaluate(), load_state()
"""
