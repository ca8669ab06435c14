"""Reference implementations of the survey's attention mechanisms, one module per technique."""
