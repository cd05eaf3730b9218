"""The layer build tool's errors: ErnieError (catalog's), so the CLI prints them as one line."""

from __future__ import annotations

from catalog.errors import ErnieError


class LayerError(ErnieError):
    """A layer set that cannot be built or would not work on Lambda."""


class LayerBudgetError(LayerError):
    """A function and its layers over Lambda's unzipped size limit."""


class ManifestError(LayerError):
    """No built layers for what is asked (no manifest, no entry, or built from other inputs): build them."""
