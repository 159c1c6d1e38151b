"""NoRA: evolve populations of LoRA adapters by crossover, mutation and IRPO training."""

__version__ = "0.1.0"
