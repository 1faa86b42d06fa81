"""An extra worker module that makes every prefork child die as it starts (crash-loop tests)."""

import multiprocessing
import os

if multiprocessing.current_process().name.startswith("ForkPoolWorker-"):
    os._exit(3)
