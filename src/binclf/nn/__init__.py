"""PyTorch pieces: pure tensor math (functional), losses, and the single-logit models."""
