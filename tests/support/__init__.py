"""The one home of what tests share: waiting with a timeout, a free port, a real ``modelyard serve``."""

from __future__ import annotations

from tests.support.ports import free_port
from tests.support.serving import Server, house_spec_in, served_model
from tests.support.waiting import wait_until, wait_until_async

__all__ = ["Server", "free_port", "house_spec_in", "served_model", "wait_until", "wait_until_async"]
