"""The data stage: bytes on disk → token ids → windows → typed one-hot `(x, y)` batches.

download   the known corpora, pinned by size and sha256; mirror and URL fetching
corpus     reading, validating and splitting the configured text file
tokenizer  bytes ↔ ids (vocabulary 256), one-hot, streaming UTF-8 decode, escaped display
batches    window starts (a pure function of seed and step), padding, masks and batches
"""
