"""Developer tools of the checkout (not part of the bot-bottle package)."""
