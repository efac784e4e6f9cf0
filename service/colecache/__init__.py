"""colecache: COLE embeddings (architecture -> PyTorch code -> frozen LM vector), cached and served."""

__version__ = "0.1.0"
