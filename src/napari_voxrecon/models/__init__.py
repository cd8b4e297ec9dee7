"""Trained models (torch). Imported lazily by the methods that use them."""
