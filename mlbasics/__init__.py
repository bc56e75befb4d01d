"""mlbasics: Hydra-configured experiment sweeps for small PyTorch networks."""
