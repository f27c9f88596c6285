"""Where trials run and the loop that runs them: trial jobs, the runner (the only prune -> screen -> fine-tune
-> measure chain), in-process and Ray executors, and the search driver."""
