"""The trial runner (the only prune -> screen -> fine-tune -> measure chain) and the search driver."""
