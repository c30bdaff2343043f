"""Your library: playlists, likes and follows."""
