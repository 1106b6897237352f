"""helpers.stats."""
