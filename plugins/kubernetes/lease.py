"""Leader election over a ``coordination.k8s.io/v1`` Lease: one active reconciler per cluster.

Every replica runs a reconciler; only the Lease holder acts. The holder renews the Lease well
within its duration; another replica takes it over only once it has expired (renewTime +
leaseDurationSeconds in the past). Every write is a replace carrying the resourceVersion that
was read, so two replicas racing for an expired Lease cannot both win: the API server refuses
the second write with 409 Conflict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from kubernetes.client import CoordinationV1Api, V1Lease, V1LeaseSpec, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from plugins.kubernetes.calls import REQUEST_TIMEOUT

log = logging.getLogger(__name__)

LEASE_NAME: Final = "macpool-reconciler"
DEFAULT_DURATION_SECONDS: Final = 15

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LeaseElector:
    """Acquire, renew and release one Lease for one identity."""

    def __init__(
        self,
        api: CoordinationV1Api,
        *,
        namespace: str,
        identity: str,
        name: str = LEASE_NAME,
        duration_seconds: int = DEFAULT_DURATION_SECONDS,
        clock: Clock = _utcnow,
        request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self.api = api
        #: (connect, read) seconds of each call: a hung API server fails the call, and the
        #: holder stops acting once its Lease could have expired, instead of waiting forever.
        self.request_timeout = request_timeout
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_seconds = duration_seconds
        self.clock = clock
        #: Who held the Lease at the last :meth:`try_acquire` (this identity once it won).
        self.holder: str | None = None

    @property
    def renew_interval(self) -> float:
        """How often the holder renews: a third of the duration leaves two tries to spare."""
        return self.duration_seconds / 3

    def try_acquire(self) -> bool:
        """Hold the Lease after this call (acquired, renewed or taken over); False otherwise."""
        now = self.clock()
        try:
            lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._create(now)
        spec = lease.spec or V1LeaseSpec()
        mine = spec.holder_identity == self.identity
        self.holder = spec.holder_identity
        if not mine and spec.holder_identity and not self._expired(spec, now):
            return False
        lease.spec = V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.duration_seconds,
            acquire_time=spec.acquire_time if mine else now,
            renew_time=now,
            lease_transitions=(spec.lease_transitions or 0) + (0 if mine else 1),
        )
        if not mine:
            log.info(
                "taking over lease %s/%s from %r", self.namespace, self.name, spec.holder_identity
            )
        return self._replace(lease)

    def release(self) -> None:
        """Give the Lease up (on shutdown) so another replica need not wait for expiry."""
        try:
            lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.request_timeout
            )
        except ApiException:
            return
        if lease.spec is None or lease.spec.holder_identity != self.identity:
            return
        lease.spec.holder_identity = None
        lease.spec.renew_time = None
        self._replace(lease)

    def _expired(self, spec: V1LeaseSpec, now: datetime) -> bool:
        renewed = spec.renew_time or spec.acquire_time
        if renewed is None:
            return True
        if renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=UTC)
        duration = spec.lease_duration_seconds or self.duration_seconds
        return renewed + timedelta(seconds=duration) < now

    def _create(self, now: datetime) -> bool:
        lease = V1Lease(
            metadata=V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self.duration_seconds,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self.api.create_namespaced_lease(
                self.namespace, lease, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status == 409:  # another replica created it first
                return False
            raise
        self.holder = self.identity
        return True

    def _replace(self, lease: V1Lease) -> bool:
        try:
            self.api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status == 409:  # someone wrote since we read: they win this round
                return False
            raise
        self.holder = lease.spec.holder_identity if lease.spec else None
        return True


__all__ = ["DEFAULT_DURATION_SECONDS", "LEASE_NAME", "LeaseElector"]
