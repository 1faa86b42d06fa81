"""``python -m facade ...`` is the ``celery`` console script."""

import sys

from facade.cli import main

sys.exit(main())
