"""Dataset loaders: one module a format."""
