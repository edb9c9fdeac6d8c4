"""The one error the server's own checks raise: a request it refuses, with the field at fault.

The app answers it as AUTOMATIC1111 answers its own HTTPExceptions (modules/api/api.py
handle_exception): {"error": "HTTPException", "detail": message, "body": "", "errors": "<status>: message"}.
"""

from __future__ import annotations


class Refused(Exception):
    """field: the request field (or option) at fault, named first in the message; status: 422 for a
    value this project cannot run, 404 for a model or path that is not there, 413 for a body or
    image over the limits."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status
