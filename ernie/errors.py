"""The driver's name for ErnieError, the one exception type a user sees. It is defined in catalog/errors.py so
that infra/ (the layer builder) raises it without importing the driver."""

from catalog.errors import ErnieError

__all__ = ["ErnieError"]
