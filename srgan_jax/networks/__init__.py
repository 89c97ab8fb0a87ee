"""The networks and losses of the paper as pure Flax Linen modules and jnp functions.

Nothing here imports the rest of srgan_jax or asks which backend it runs on: anything
backend-specific (the XLA:CPU convolution forms) arrives as a module field, set by the
factories in `srgan_jax.models`.
"""
