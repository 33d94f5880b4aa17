"""The local demographics directory: patients kept in the metadata store, loaded by `mesh-broker demographics`."""

from __future__ import annotations

from collections.abc import Sequence

from broker.demographics.protocol import DemographicsUnavailable
from broker.models import Patient
from broker.store.protocol import PatientStore, StoreError


class LocalDemographics:
    def __init__(self, store: PatientStore):
        self._store = store

    async def open(self) -> None:
        """The store is opened by the app itself."""

    async def close(self) -> None:
        """Nothing of its own to release."""

    async def lookup(self, nhs_number: str) -> Patient | None:
        try:
            return await self._store.get_patient(nhs_number)
        except StoreError as exc:
            raise DemographicsUnavailable(f"local directory: {exc}") from exc

    async def load(self, patients: Sequence[Patient]) -> int:
        """Create or replace these patients in one transaction; returns how many."""
        await self._store.put_patients(patients)
        return len(patients)
