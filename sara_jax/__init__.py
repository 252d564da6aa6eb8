"""sara_jax: SARA (structural and adversarial representation alignment) in JAX/Flax."""
