"""Training: from a config and a corpus to a trained run directory.

optimizer    AdamW, or Muon on the family's hidden matrices; cosine or warmup-stable-decay schedules
step         the train state, the masked loss, the jitted train and eval steps, batch placement
evaluation   the loss over a fixed window set with its standard error; the probe
split_eval   a trained run scored on a whole split (or a file), as `launch.evaluate` reports it
checks       cross-field checks of the config
workdir      a fresh run, or the checkpoint to resume from; the lock that keeps it to one process
checkpoints  orbax train-state checkpoints: save, find the latest, restore onto any mesh
history      the log so far (records, evaluations, probes, timings); recording a step; the summary
progress     a tqdm bar or plain progress lines
signals      SIGINT/SIGTERM: stop after the current step
background   compiling the train step while the step-0 evaluation runs
loop         `train_and_evaluate`: the run, as its named steps
"""
