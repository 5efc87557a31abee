"""Public links in messages: the double opt-in confirmation (``/c/{token}``) and the unsubscribe
(``/u/{token}``, RFC 8058 one-click)."""
