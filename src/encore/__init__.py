"""Encore: an open-source music streaming backend."""
