"""helpers.run."""
