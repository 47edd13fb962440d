"""algdist: Algorithm Distillation in JAX."""

__version__ = '0.1.0'
