"""The benchmark (`python -m launch.benchmark`): measured figures for BENCHMARKS.md, and the peers.

    measure         medians with their spread, XLA's memory plan and FLOP count, the matmul ceiling
    training_speed  training tokens/s through the trainer's own step; the recipe end to end
    sampling_speed  the fast decoder against the reference
    pack_speed      parameter-pack save and load rates
    scan_speed      Mamba's scan forms at several lengths
    choices         the measurements behind the defaults that the code's comments point to
    peers           the PyTorch peer, run as its own process
    nanogpt_torch   the PyTorch peer itself: nanoGPT's GPT-2, trained eagerly
    tables          BENCHMARKS.md from the JSON
    run             which sections run, what an earlier JSON keeps, where the files go

Measurements that tell the truth: warm-up first, compile timed apart, medians with their spread.
Weights are freshly initialised: speed does not depend on what the weights learned. This machine is
shared and noisy: quote ratios measured in the same run, not absolute times.
"""
