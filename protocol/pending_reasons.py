"""Why each waiting run of a cluster with team quotas waits, as the leading scheduler's last
admission decided it (``scheduler.policy.decide``).

The scheduler writes the whole set after each decision; the API reads the few runs a page
shows. The API never imports the scheduler (docs/architecture.md), so the reasons cross
the process boundary here instead of being decided twice; a run the last decision did not
look at (beyond the head of its team's queue, or submitted since) has none here and its
listing says where it waits instead (``store.run_listings``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis

from protocol import keys
from protocol.replies import as_text

# A decision is replaced by the next one within a sweep; one left by a scheduler that
# stopped deciding (the cluster lost its quotas, the service went down) fades on its own.
REASONS_TTL = 3600


def publish(
    client: redis.Redis | redis.client.Pipeline, cluster: str, reasons: Mapping[str, str]
) -> None:
    """Replace the cluster's reasons by ``reasons`` (in one MULTI where ``client`` is a
    pipeline, so a reader sees the old set or the new one, never a mix)."""
    key = keys.cluster_reasons(cluster)
    client.delete(key)
    if reasons:
        client.hset(key, mapping=dict(reasons))
        client.expire(key, REASONS_TTL)


def forget(client: redis.Redis, cluster: str) -> None:
    client.delete(keys.cluster_reasons(cluster))


def read(client: redis.Redis, cluster: str, run_ids: Sequence[str]) -> dict[str, str]:
    """The reasons recorded for those of ``run_ids`` the last decision looked at."""
    if not run_ids:
        return {}
    values = client.hmget(keys.cluster_reasons(cluster), list(run_ids))
    return {r: as_text(v) for r, v in zip(run_ids, values, strict=True) if v is not None}
