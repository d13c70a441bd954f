"""Shared test set-up.

Importing ``botbottle`` puts the collection (collections/) on ``sys.path``, so
tests can import ``ansible_collections.botbottle.bottle.plugins.module_utils``
the way the package does.
"""

import botbottle  # noqa: F401
