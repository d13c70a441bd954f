"""Shared test set-up.

The collection is importable as ``ansible_collections.botbottle.bottle`` because the
package installs it (editable: mapped to the checkout's ``collections/``).
"""
