"""The model card (`README.md` of an export): what was trained, on what, how well, and how to load it."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from bytelm.data import download

LOAD_SNIPPET = """from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{dir}")
model = AutoModelForCausalLM.from_pretrained("{dir}")
ids = tok("ROMEO:", return_tensors="pt").input_ids
print(tok.decode(model.generate(ids, max_new_tokens={n}, do_sample=False)[0]))"""


def corpus_facts(data_config: dict) -> str:
    """The corpus by name, size and sha256: pinned for a known corpus, measured for one's own file."""
    if data_config.get("file"):
        path = Path(data_config["file"])
        if not path.is_file():
            many = sorted(glob.glob(str(path / "*") if path.is_dir() else str(path)))
            if many:  # a folder of shards or a glob: their count and total size
                return f"`{path}`, {len(many)} files, {sum(os.path.getsize(p) for p in many):,} bytes"
            return f"`{path}` (not on the exporting machine: size and sha256 unknown)"
        size, digest = download.file_digest(path)
        return f"`{path.name}`, {size:,} bytes, sha256 `{digest}`"
    known = download.KNOWN_CORPORA.get(data_config.get("corpus", ""))
    if known is None:
        return f"`{data_config.get('corpus')}`"
    return f"{known.name}, {known.size:,} bytes, {known.algorithm} `{known.hexdigest}`"


def split_facts(data_config: dict) -> str:
    """How the validation split was cut: fixed sizes (the config's, or a known corpus's convention) or
    the last fraction of each file's bytes."""
    sizes = [int(data_config.get(f"{name}_bytes", 0) or 0) for name in ("train", "val")]
    known = download.KNOWN_CORPORA.get(data_config.get("corpus", ""))
    if not any(sizes) and not data_config.get("file") and known is not None and known.splits:
        sizes = list(known.splits[:2])
    if any(sizes):
        return f"the validation split is the {sizes[1]:,} bytes after the first {sizes[0]:,}"
    return f"the last {data_config.get('val_fraction')} of its bytes is the validation split"


def model_card(config: dict, summary: dict, architecture: str, max_new_tokens: int) -> str:
    """The card as markdown; `summary` is the training log's summary (empty when there is no log)."""
    loss = summary.get("final_val_loss")
    quality = (
        f"{loss:.4f} nats per byte ({summary.get('val_bpb', float('nan')):.4f} bits per byte) on the validation "
        f"split ({config['data'].get('final_eval_windows', 0) or 'all'} windows), after {summary.get('steps')} steps"
        if isinstance(loss, float)
        else "no training log was found beside the weights"
    )
    model = json.dumps(config["model"], indent=1, sort_keys=True)
    return f"""---
library_name: transformers
tags: [bytelm, byte-level, {architecture}]
---

# {config.get("name", "bytelm model")}: a byte-level {architecture} trained with bytelm

Tokens are bytes: the vocabulary is the 256 byte values, and the tokenizer maps text to its UTF-8 bytes
(id = byte, no special tokens added) and back.

- **Corpus**: {corpus_facts(config["data"])}; {split_facts(config["data"])}.
- **Validation loss**: {quality}.
- **Model** (`config.model` of the run):

```json
{model}
```

## Load and sample

```python
{LOAD_SNIPPET.format(dir="PATH/TO/THIS/FOLDER", n=max_new_tokens)}
```

`generation_config.json` carries the run's sampling settings where transformers has the same setting
(length, temperature, top-k, greedy). bytelm's repeat penalty subtracts `penalty × count` from a logit
where transformers' `repetition_penalty` divides it, so it is not carried, nor is `ascii_only`.
`config.json` keeps the run's whole bytelm config under `bytelm_config`, so that bytelm can train on or
sample from this folder too (`--config.train.init_params=THIS_FOLDER`, `launch.sample --checkpoint_dir=THIS_FOLDER`).
"""
