"""Demographics from a Personal Demographics Service (PDS) FHIR R4 endpoint: GET /Patient/{nhs_number}.

Each attempt has its own timeout; timeouts, connection errors, 429 and 5xx are retried with exponential
backoff, a bounded number of times. Answers (found and not found) are cached briefly, since one sender often
sends several documents for one patient in a burst.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from datetime import datetime, timedelta

import aiohttp
import orjson

from broker.clock import SYSTEM_CLOCK, Clock
from broker.demographics.fhir import FhirError, patient_from_fhir
from broker.demographics.protocol import DemographicsUnavailable
from broker.models import Patient

log = logging.getLogger("broker.demographics")

#: Bounds the cache's memory whatever the traffic; the oldest entries go first.
CACHE_ENTRIES = 10_000


class PdsDemographics:
    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float,
        retries: int,
        cache_seconds: float,
        api_key: str = "",
        bearer_token: str = "",
        backoff_seconds: float = 0.2,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._attempts = retries + 1
        self._cache_for = timedelta(seconds=cache_seconds)
        self._backoff = backoff_seconds
        self._clock = clock
        self._headers = {"Accept": "application/fhir+json"}
        if api_key:
            self._headers["apikey"] = api_key
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        self._cache: OrderedDict[str, tuple[datetime, Patient | None]] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def lookup(self, nhs_number: str) -> Patient | None:
        now = self._clock.now()
        cached = self._cache.get(nhs_number)
        if cached is not None and cached[0] > now:
            return cached[1]
        patient = await self._fetch(nhs_number)
        self._remember(nhs_number, patient, now)
        return patient

    def _remember(self, nhs_number: str, patient: Patient | None, now: datetime) -> None:
        if not self._cache_for:
            return
        self._cache[nhs_number] = (now + self._cache_for, patient)
        self._cache.move_to_end(nhs_number)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def _fetch(self, nhs_number: str) -> Patient | None:
        if self._session is None:
            raise DemographicsUnavailable("the PDS client is not open")
        url = f"{self._base_url}/Patient/{nhs_number}"
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                # PDS requires a fresh X-Request-ID on every request, retries included.
                async with self._session.get(url, headers={"X-Request-ID": str(uuid.uuid4())}) as response:
                    if response.status == 404:
                        return None
                    if response.status == 429 or response.status >= 500:
                        problem = f"HTTP {response.status}"
                        continue
                    if response.status != 200:
                        raise DemographicsUnavailable(f"PDS answered HTTP {response.status}")
                    body = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                problem = type(exc).__name__
                continue
            return _patient(body)
        # The NHS number is patient data: logs carry only what went wrong.
        log.warning(
            "PDS unavailable", extra={"action": "pds_unavailable", "attempts": self._attempts, "problem": problem}
        )
        raise DemographicsUnavailable(f"PDS did not answer after {self._attempts} attempts ({problem})")


def _patient(body: bytes) -> Patient:
    try:
        return patient_from_fhir(orjson.loads(body))
    except orjson.JSONDecodeError:
        raise DemographicsUnavailable("PDS answered with malformed JSON") from None
    except FhirError as exc:
        raise DemographicsUnavailable(f"PDS answered with a malformed Patient: {exc}") from None
