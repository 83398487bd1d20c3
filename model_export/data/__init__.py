"""Training data: phantom generator, dataset readers and tokenizers."""
