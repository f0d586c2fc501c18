"""SAGE-nano: inverse reasoning for language models."""
