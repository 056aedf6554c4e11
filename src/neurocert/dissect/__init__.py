"""Pipelines: NetDissect- and CLIP-Dissect-style identification with certificates and BE."""
