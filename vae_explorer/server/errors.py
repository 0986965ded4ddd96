"""The error the page shows as a message: bad input or an unusable model, explained for the person at the page.
Its own module so the catalog's errors can be ones too (a checkpoint's dataset missing is met deep in a view)."""
from __future__ import annotations


class ViewError(ValueError):
    """Bad input or an unusable model, explained for the person at the page."""
