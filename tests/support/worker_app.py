"""The module a worker subprocess of the tests runs: the five actors and the test ones."""

import actors  # noqa: F401
import tests.support.extra_actors  # noqa: F401
