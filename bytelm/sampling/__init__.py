"""Sampling a continuation from a trained model, one byte at a time.

settings   `SampleSettings` and their checks, and the decoder names (no JAX: flags fail fast)
choice     the one token-choice function: repeat penalty, ascii_only, temperature, top-k, the draw
sampler    the `Sampler` interface every decoder implements (`generate`, `continue_ids`)
reference  the reference decoder: one forward pass over the context per byte, from Python
fast       the models' decoding protocol inside one compiled loop, byte-identical to the reference
decoders   `make_sampler` (a decoder by name) and `sample_text`
console    what `launch.sample` prints: samples, or an interactive prompt loop
"""
