"""Training configs, one file per paper variant plus `quickstart` (installed as `srgan_jax.configs`)."""
