"""Probing data: readers and generators of probing sets and their concept labels."""
