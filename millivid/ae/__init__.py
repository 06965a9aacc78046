"""The hierarchical autoencoder: a pyramid of token levels per frame."""
