"""The Demographics Protocol: who a patient is and where they are registered, by NHS number."""

from __future__ import annotations

from typing import Protocol

from broker.models import Patient


class DemographicsUnavailable(Exception):
    """The source could not answer now (timeouts, connection errors, 5xx or a malformed answer)."""


class Demographics(Protocol):
    """A directory of patients. Implementations open and close with the app."""

    async def open(self) -> None:
        """Acquire what lookups need (an HTTP session); called once before the first lookup."""

    async def close(self) -> None:
        """Release it; no lookups follow."""

    async def lookup(self, nhs_number: str) -> Patient | None:
        """The patient with this (valid) NHS number, or None when the source has no such patient.

        Raises DemographicsUnavailable when the source cannot say either way.
        """
