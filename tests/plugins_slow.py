"""A test plugin (loaded through AUTOCOMPRESS_PLUGINS): a technique that only waits."""

import time

from pydantic import BaseModel, ConfigDict

from autocompress.techniques.base import TECHNIQUES, Technique, register_technique


class WaitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 0.0


if "wait" not in TECHNIQUES._entries:

    @register_technique
    class Wait(Technique):
        name = "wait"
        Params = WaitParams

        def apply(self, model, params, ctx):
            time.sleep(params.seconds)
            return model
