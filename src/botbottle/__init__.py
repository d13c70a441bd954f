"""bot-bottle: provision sandboxes (bottles) for unsupervised AI coding agents."""

from botbottle import _paths as _paths  # makes the collection's module_utils importable

__version__ = "0.1.0"
