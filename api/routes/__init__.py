"""HTTP routes: search, embed, indexes, health and metrics."""
