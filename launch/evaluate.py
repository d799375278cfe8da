"""Scores a trained run on a whole split of its corpus, or on any file, as papers report it.

    python -m launch.evaluate --checkpoint_dir=runs/gpt2_tiny --split=val
    python -m launch.evaluate --checkpoint_dir=runs/enwik8 --split=test --stride=32
    python -m launch.evaluate --checkpoint_dir=runs/gpt2_tiny --file=other.txt

Prints and writes to the run directory (eval_<split>.json, eval_<split>_stride<S>.json, or
eval_file.json) the loss in nats and bits per byte over every byte of the split, its standard error
over windows, and the window set: non-overlapping windows of the run's seq_len, or with --stride=S
windows every S bytes that score only their last S bytes (more context per byte, seq_len / S times
the work).
"""

from absl import flags

from launch import cli

_DIR = flags.DEFINE_string("checkpoint_dir", None, "a training run's workdir")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "val", "test"], "which split of the run's corpus")
_FILE = flags.DEFINE_string("file", "", "score this file (or folder, or glob) instead, every byte of it")
_STRIDE = flags.DEFINE_integer("stride", 0, "sliding windows every STRIDE bytes; 0 = non-overlapping")
_BATCH = flags.DEFINE_integer("batch_size", 0, "windows per batch; 0 = the run's train.eval_batch_size")
flags.mark_flag_as_required("checkpoint_dir")


def main() -> None:
    from bytelm import config_base
    from bytelm.artifacts import run_dir
    from bytelm.errors import UsageError

    config = run_dir.read_config(_DIR.value)  # a wrong folder fails before JAX is imported
    if _STRIDE.value < 0 or _BATCH.value < 0:
        raise UsageError(f"--stride and --batch_size must be >= 0, got {_STRIDE.value} and {_BATCH.value}")
    from bytelm.training import split_eval
    from launch import process

    process.configure(config.get("runtime") or config_base.runtime_config())  # the devices and cache it trained with
    split_eval.evaluate_run(_DIR.value, _SPLIT.value, _FILE.value, _STRIDE.value, _BATCH.value)


if __name__ == "__main__":
    cli.run(main)
