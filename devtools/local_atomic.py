"""The local endpoint answers each call atomically, as AWS applies each API call as one change.

moto's server runs every request on a thread of its own, but its backends are plain dictionaries that no
lock guards: two DeleteCertificate calls for one certificate both found it and the second then failed on
the missing key (an HTML 500 instead of AWS's ResourceNotFoundException), and a call that scans the
certificates (DescribeCertificate, DeleteCertificate's attachment checks) while another adds or removes one
failed with "dictionary changed size during iteration". Factory stations call the endpoint from many threads
and processes at once (the soak in bench/ met both), so the endpoint answers one call at a time: the answers
are AWS's for some order of the calls, never a crash in between.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.core import responses as core_responses

# Reentrant: a call's handler may dispatch to another backend's handler in the same thread.
_one_call_at_a_time = threading.RLock()


def add_atomic_calls() -> None:
    """Serialize every call the endpoint answers (idempotent: the handler is wrapped once)."""
    answer = core_responses.BaseResponse.call_action
    if getattr(answer, "atomic", False):
        return

    @functools.wraps(answer)  # keeps the marks of the corrections already made (the call count's)
    def atomic_call_action(self: Any) -> Any:
        with _one_call_at_a_time:
            return answer(self)

    atomic_call_action.atomic = True  # type: ignore[attr-defined]
    core_responses.BaseResponse.call_action = atomic_call_action  # type: ignore[method-assign]
