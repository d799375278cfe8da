"""The benchmark (`python -m launch.benchmark`): measured figures for BENCHMARKS.md, and the peers.

    measure         medians with their spread, XLA's memory plan and FLOP count, the matmul ceiling
    training_speed  training tokens/s through the trainer's own step; the recipe end to end
    sampling_speed  the fast decoder against the reference
    pack_speed      parameter-pack save and load rates
    scan_speed      Mamba's scan forms at several lengths
    choices         the measurements behind the defaults that the code's comments point to
    weight_decay    Mamba's no-decay leaves: the validation curve with and without them
    corpus_speed    a large corpus against Tiny Shakespeare, as launch.train processes
    speedrun        time to quality: configs/gpt2_speedrun.py against real nanoGPT, and its ablation
    peers           the PyTorch peer, run as its own process
    nanogpt_torch   the PyTorch peer itself: nanoGPT's GPT-2, trained eagerly
    nanogpt_real    real nanoGPT from the user's checkout, as its own process
    processes       whole processes timed from start to exit, with their evaluation curves
    tables          BENCHMARKS.md from the JSON
    run             which sections run, what an earlier JSON keeps, where the files go

Measurements that tell the truth: warm-up first, compile timed apart, medians with their spread.
Weights are freshly initialised: speed does not depend on what the weights learned. This machine is
shared and noisy: quote ratios measured in the same run, not absolute times.
"""
