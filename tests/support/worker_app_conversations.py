"""A worker subprocess's module: the five actors, sending WhatsApp messages into Redis.

With TEST_STALL_FIRST_MODEL_CALL set, the first model call of the whole
test stalls (so the test can kill the process in the middle of it); the
model's starts are recorded in Redis.
"""

import os
import time

import actors
from actors import runtime
from tests.support.whatsapp_redis import RedisRecordingWhatsApp

#: The list of model calls started, and the key the first call claims.
MODEL_STARTS_KEY = "test:model:starts"
FIRST_CALL_KEY = "test:model:first"


class _StallingModel:
    def __init__(self, inner, client) -> None:
        self.inner, self.client = inner, client

    def generate(self, system_prompt, turns):
        self.client.rpush(MODEL_STARTS_KEY, os.getpid())
        if self.client.set(FIRST_CALL_KEY, os.getpid(), nx=True):
            time.sleep(120)
        return self.inner.generate(system_prompt, turns)


_runtime = runtime.build(actors.config)
_runtime.whatsapp = RedisRecordingWhatsApp(_runtime.redis)
if os.environ.get("TEST_STALL_FIRST_MODEL_CALL"):
    _runtime.model = _StallingModel(_runtime.model, _runtime.redis)
runtime.install(_runtime)
