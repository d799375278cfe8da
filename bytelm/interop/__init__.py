"""A run's model in other people's tools: Hugging Face `transformers`, and back.

huggingface     the weight names and layouts of GPT2LMHeadModel and MambaForCausalLM, their configs,
                the generation settings that mean the same thing (no JAX: entry points read it first)
byte_tokenizer  the byte tokenizer as `tokenizers` files (id = byte, no special tokens)
model_card      the export's README.md
export          writing a run as a transformers folder (atomically), reading one back
"""
