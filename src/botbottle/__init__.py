"""bot-bottle: provision sandboxes (bottles) for unsupervised AI coding agents."""

__version__ = "0.1.0"
