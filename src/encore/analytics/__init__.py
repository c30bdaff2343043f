"""Insights: artist statistics, the analytics team's API, SQL over the lake, royalties, charts."""
