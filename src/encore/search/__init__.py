"""Search: typo-tolerant, accent-insensitive search over the catalog and playlists."""
