"""An extra worker module that makes prefork children die as they start (crash-loop tests).

Every ``ForkPoolWorker-N`` dies with exit code 3 while importing this, before it
is ready, except the Ns listed in ``TEST_SPARED_CHILDREN`` (comma-separated).
``TEST_CHILD_DIES_AFTER_S`` makes a child take that long to die: one slow to
fail keeps its slot, never ready, meanwhile.
"""

import multiprocessing
import os
import time

_name = multiprocessing.current_process().name
if _name.startswith("ForkPoolWorker-"):
    if _name.removeprefix("ForkPoolWorker-") not in os.environ.get("TEST_SPARED_CHILDREN", "").split(","):
        time.sleep(float(os.environ.get("TEST_CHILD_DIES_AFTER_S", "0")))
        os._exit(3)
