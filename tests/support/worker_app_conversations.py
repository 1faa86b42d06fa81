"""A worker subprocess's module: the five actors, sending WhatsApp messages into Redis."""

import actors
from actors import runtime
from tests.support.whatsapp_redis import RedisRecordingWhatsApp

_runtime = runtime.build(actors.config)
_runtime.whatsapp = RedisRecordingWhatsApp(_runtime.redis)
runtime.install(_runtime)
