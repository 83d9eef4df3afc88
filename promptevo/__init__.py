"""promptevo: evolve prompt-rewriting instructions for text-to-image models."""

__version__ = "0.1.0"
