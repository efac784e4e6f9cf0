"""The frozen language model: options, fingerprint, tokenization, pooling and the batching queue."""
