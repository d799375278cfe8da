"""What a run leaves on disk, and how to read it back. No module here knows a model.

param_pack  the bit-exact JSON parameter pack (raw little-endian bytes, base64, sha256 per leaf)
json_scan   spans of JSON values in a memory map, so the pack loads one leaf at a time
run_dir     the run directory's files, creating it, and which config fields a resume may change
train_log   the training log document (a superset of TorchLean's TrainLog) and reading it
"""
