"""Offline guard for tests that drive diffusers / transformers: nothing may be downloaded."""

from __future__ import annotations

import contextlib
import socket

import pytest


@contextlib.contextmanager
def no_network():
    """HF_HUB_OFFLINE=1, and any socket connection attempt raises (fails the test loudly)."""
    def refuse(*args, **kwargs):
        raise RuntimeError(f"network access attempted: {args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield
