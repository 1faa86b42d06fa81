"""The ``celery`` sub-commands, one module each (see facade.cli)."""
