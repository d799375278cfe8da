"""bytelm: byte-level language models in JAX, from a text file to a continuation."""

__version__ = "0.1.0"
