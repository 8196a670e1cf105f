def load_jax_checkpoint(p): raise NotImplementedError
