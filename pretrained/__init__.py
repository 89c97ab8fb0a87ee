"""Shipped generators (installed as package data `srgan_jax.pretrained`); see README.md here."""
