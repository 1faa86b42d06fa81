"""Fixed settings of the local mode of ``assistant run`` (no WHATSAPP_TOKEN).

They are not secrets: they only connect the local web app, worker and
WhatsApp stand-in, and ``assistant demo`` signs with the same app secret.
A variable that is set keeps its value.
"""

from __future__ import annotations

__all__ = ["LOCAL_WHATSAPP_TOKEN", "LOCAL_PHONE_NUMBER_ID", "LOCAL_APP_SECRET", "LOCAL_VERIFY_TOKEN",
           "STANDIN_API_VERSION"]

LOCAL_WHATSAPP_TOKEN = "local-standin-token"
#: The business number id of the fixtures' metadata.
LOCAL_PHONE_NUMBER_ID = "106540352242922"
LOCAL_APP_SECRET = "local-demo-app-secret"
LOCAL_VERIFY_TOKEN = "local-demo-verify-token"
#: The Graph API version in the stand-in's base URL, as production has one.
STANDIN_API_VERSION = "v21.0"
