"""Database tables and the API shapes built on them, one module per entity family.

Every public name is importable from here (``from store.models import Run``), and importing
this package registers every table on ``SQLModel.metadata`` (what Alembic compares with).

- ``names``: name rules (clusters, experiments, tokens), ``utcnow``, timestamp columns
- ``clusters``: cluster settings, the cluster table, clusters and workers as shown
- ``environment_builds``: what a client asks to build ahead of any run
- ``experiments``: the experiment table, experiments and an experiment's runs as shown
- ``environments``: registered environments, one row per version
- ``counters``: run counts and timing histograms the database maintains (0012)
- ``runs``: a submitted spec, the run table and its changes, its log and files
- ``tracking``: metrics, their points and rollups, tags, properties; events in, reads out
- ``teams``: teams, their members and quotas per cluster, usage and run attempts
- ``usage``: usage accounting as shown (slot- and GPU-seconds per team, user, cluster, day)
- ``tokens``: API tokens and sessions, roles
- ``audit``: the audit log
- ``scheduler``: the fence of the scheduler that leads (one row)
"""

from __future__ import annotations

from store.models.audit import (
    AuditEvent,
    AuditEventsPublic,
)
from store.models.clusters import (
    Cluster,
    ClusterCreate,
    ClusterPublic,
    ClustersPublic,
    ClusterUpdate,
    TeamUsagePublic,
    WorkerPublic,
    WorkersPublic,
)
from store.models.counters import (
    ClusterCancelCount,
    ExperimentRunCount,
    RunCount,
    RunTimingBucket,
)
from store.models.environment_builds import EnvironmentBuildSpec
from store.models.environments import (
    RegisteredEnvironment,
    RegisteredEnvironmentPublic,
    RegisteredEnvironmentsPublic,
    check_environment_name,
)
from store.models.experiments import (
    Experiment,
    ExperimentPublic,
    ExperimentRunPublic,
    ExperimentRunsPublic,
    ExperimentsPublic,
)
from store.models.names import (
    check_cluster_name,
    utcnow,
)
from store.models.runs import (
    BulkCancel,
    CancelResult,
    CancelResults,
    FailRequest,
    InteractiveRun,
    InteractiveRunPublic,
    Run,
    RunArrayPublic,
    RunArraySpec,
    RunChange,
    RunDetails,
    RunFile,
    RunFilePublic,
    RunFilesPublic,
    RunLog,
    RunPublic,
    RunSpec,
    RunsPublic,
    RunTokenRequest,
)
from store.models.scheduler import SchedulerFence
from store.models.teams import (
    NO_TEAM,
    QuotaPublic,
    QuotaSettings,
    QuotasPublic,
    RunAttempt,
    Team,
    TeamCreate,
    TeamMember,
    TeamMembership,
    TeamPublic,
    TeamQuota,
    TeamsPublic,
    TeamUsage,
    check_team_name,
)
from store.models.tokens import (
    ApiToken,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TokensPublic,
)
from store.models.tracking import (
    ROLLUP_SPAN,
    EventBatch,
    EventsAccepted,
    HistoryWindow,
    Metric,
    MetricHistoryPublic,
    MetricNamePublic,
    MetricNamesPublic,
    MetricPoint,
    MetricProducer,
    MetricRollup,
    MetricSeriesPublic,
    RunMetricsPublic,
    RunProperty,
    RunTag,
)
from store.models.usage import USAGE_GROUPS, UsageReport, UsageRow

__all__ = [
    "NO_TEAM",
    "ROLLUP_SPAN",
    "USAGE_GROUPS",
    "ApiToken",
    "AuditEvent",
    "AuditEventsPublic",
    "BulkCancel",
    "CancelResult",
    "CancelResults",
    "Cluster",
    "ClusterCancelCount",
    "ClusterCreate",
    "ClusterPublic",
    "ClusterUpdate",
    "ClustersPublic",
    "EnvironmentBuildSpec",
    "EventBatch",
    "EventsAccepted",
    "Experiment",
    "ExperimentPublic",
    "ExperimentRunCount",
    "ExperimentRunPublic",
    "ExperimentRunsPublic",
    "ExperimentsPublic",
    "FailRequest",
    "HistoryWindow",
    "InteractiveRun",
    "InteractiveRunPublic",
    "Metric",
    "MetricHistoryPublic",
    "MetricNamePublic",
    "MetricNamesPublic",
    "MetricPoint",
    "MetricProducer",
    "MetricRollup",
    "MetricSeriesPublic",
    "QuotaPublic",
    "QuotaSettings",
    "QuotasPublic",
    "RegisteredEnvironment",
    "RegisteredEnvironmentPublic",
    "RegisteredEnvironmentsPublic",
    "Run",
    "RunArrayPublic",
    "RunArraySpec",
    "RunAttempt",
    "RunChange",
    "RunCount",
    "RunDetails",
    "RunFile",
    "RunFilePublic",
    "RunFilesPublic",
    "RunLog",
    "RunMetricsPublic",
    "RunProperty",
    "RunPublic",
    "RunSpec",
    "RunTag",
    "RunTimingBucket",
    "RunTokenRequest",
    "RunsPublic",
    "SchedulerFence",
    "Team",
    "TeamCreate",
    "TeamMember",
    "TeamMembership",
    "TeamPublic",
    "TeamQuota",
    "TeamUsage",
    "TeamUsagePublic",
    "TeamsPublic",
    "TokenCreate",
    "TokenCreated",
    "TokenPublic",
    "TokensPublic",
    "UsageReport",
    "UsageRow",
    "WorkerPublic",
    "WorkersPublic",
    "check_cluster_name",
    "check_environment_name",
    "check_team_name",
    "utcnow",
]
