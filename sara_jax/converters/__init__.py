"""Converters from published PyTorch checkpoints (Hugging Face hub, torch hub, torchvision)
into sara_jax's Flax param trees, one module per model family."""
