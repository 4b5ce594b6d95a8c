"""What a unit of work tells other processes once it has committed, and never before.

Services never commit (see ``store``), so they cannot know when a change is final. They add
what others must hear to an ``Announcements``; the route, loop or task that owns the unit
of work commits, then sends it. Nobody is told of a change that may still roll back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from protocol.messages import StateChanged, Wake
from protocol.streams import publish_live, send_to_ingest
from runyard.status import RunStatus


@dataclass
class Announcements:
    """Run statuses for live followers, and clusters for the scheduler to look at again."""

    states: list[StateChanged] = field(default_factory=list)
    clusters: set[str] = field(default_factory=set)

    def status(self, run_id: str, status: RunStatus) -> None:
        """Live followers of the run see its new status."""
        self.states.append(StateChanged(run_id=run_id, status=status))

    def wake(self, cluster: str) -> None:
        """The scheduler looks at the cluster at once (a run queued, a slot or node freed)."""
        self.clusters.add(cluster)

    def send(self, client: redis.Redis) -> None:
        """Best effort, after the commit: what was committed stands if Redis is down (the
        scheduler's sweep looks at every cluster within a second; a follower that reconnects
        reads the status from the database)."""
        try:
            if self.states:
                publish_live(client, self.states)
            if self.clusters:
                send_to_ingest(client, [Wake(cluster=c) for c in sorted(self.clusters)])
        except redis.RedisError:
            pass


def wake(client: redis.Redis, cluster: str) -> None:
    """After a commit that may let a cluster start runs: the scheduler looks at it now."""
    news = Announcements()
    news.wake(cluster)
    news.send(client)
