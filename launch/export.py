"""Writes a run's model as a folder that Hugging Face `transformers` loads by itself.

    python -m launch.export --checkpoint_dir=runs/gpt2_tiny --out=exports/gpt2_tiny

The folder holds config.json (GPT2Config, MambaConfig or Mamba2Config, with the run's bytelm config),
model.safetensors, generation_config.json, the byte tokenizer (tokenizer.json, tokenizer_config.json) and
a README.md model card. `AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`
load it with no bytelm installed; bytelm reads it back with --config.train.init_params=DIR or
launch.sample --checkpoint_dir=DIR. No torch is needed to export.
"""

from absl import flags

from launch import cli

_DIR = flags.DEFINE_string("checkpoint_dir", None, "a training run's workdir")
_OUT = flags.DEFINE_string("out", None, "the folder to write")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an existing --out")
flags.mark_flag_as_required("checkpoint_dir")
flags.mark_flag_as_required("out")


def main() -> None:
    from bytelm.interop import export  # JAX (for the shape check) loads only once the flags are known good

    written = export.export_run(_DIR.value, _OUT.value, overwrite=_OVERWRITE.value)
    print(f"wrote {_OUT.value}: {', '.join(written)}")


if __name__ == "__main__":
    cli.run(main)
