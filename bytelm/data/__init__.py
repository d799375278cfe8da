"""The data stage: bytes on disk → token ids → windows → typed one-hot `(x, y)` batches.

download   the known corpora, pinned by size and digest; mirror, URL and zip fetching
corpus     the configured file, folder or glob: mapped, checked, split; what a run records of it
splits     the train / validation / test splits as views of the maps, and how files are cut
utf8       the UTF-8 check, streamed in chunks and remembered per file version
tokenizer  bytes ↔ ids (vocabulary 256), one-hot, streaming UTF-8 decode, escaped display
batches    window starts (a pure function of seed and step), padding, masks and batches
"""
