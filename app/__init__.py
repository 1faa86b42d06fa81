"""The domain and web layer of the WhatsApp assistant.

Nothing in this package imports :mod:`actors` or :mod:`facade`: data
flows one way, web -> enqueue -> actor -> domain -> storage.
"""
