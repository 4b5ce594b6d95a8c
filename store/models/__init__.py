"""Database tables and the API shapes built on them, one module per entity family.

Every public name is importable from here (``from store.models import Run``), and importing
this package registers every table on ``SQLModel.metadata`` (what Alembic compares with).

- ``names``: name rules (clusters, experiments, tokens), ``utcnow``, timestamp columns
- ``clusters``: cluster settings, the cluster table, clusters and workers as shown
- ``experiments``: the experiment table, experiments and an experiment's runs as shown
- ``runs``: a submitted spec, the run table and its changes, its log and files
- ``tracking``: metrics, their points and rollups, tags, properties; events in, reads out
- ``tokens``: API tokens and sessions, roles
- ``audit``: the audit log
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
    ClusterSettings,
    ClustersPublic,
    ClusterUpdate,
    WorkerPublic,
    WorkersPublic,
)
from store.models.experiments import (
    Experiment,
    ExperimentPublic,
    ExperimentRunPublic,
    ExperimentRunsPublic,
    ExperimentsPublic,
)
from store.models.names import (
    CLUSTER_NAME,
    EXPERIMENT_NAME,
    TOKEN_NAME,
    check_cluster_name,
    check_experiment_name,
    check_token_name,
    creation_timestamp,
    optional_timestamp,
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
    RunBase,
    RunChange,
    RunFile,
    RunFilePublic,
    RunFilesPublic,
    RunLog,
    RunPublic,
    RunSpec,
    RunsPublic,
    RunTokenRequest,
)
from store.models.tokens import (
    ApiToken,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TokensPublic,
)
from store.models.tracking import (
    MAX_EVENTS,
    ROLLUP_SPAN,
    EventBatch,
    EventsAccepted,
    Metric,
    MetricHistoryPublic,
    MetricNamePublic,
    MetricNamesPublic,
    MetricPoint,
    MetricRollup,
    MetricSeriesPublic,
    RunMetricsPublic,
    RunProperty,
    RunTag,
)

__all__ = [
    "CLUSTER_NAME",
    "EXPERIMENT_NAME",
    "MAX_EVENTS",
    "ROLLUP_SPAN",
    "TOKEN_NAME",
    "ApiToken",
    "AuditEvent",
    "AuditEventsPublic",
    "BulkCancel",
    "CancelResult",
    "CancelResults",
    "Cluster",
    "ClusterCreate",
    "ClusterPublic",
    "ClusterSettings",
    "ClusterUpdate",
    "ClustersPublic",
    "EventBatch",
    "EventsAccepted",
    "Experiment",
    "ExperimentPublic",
    "ExperimentRunPublic",
    "ExperimentRunsPublic",
    "ExperimentsPublic",
    "FailRequest",
    "InteractiveRun",
    "InteractiveRunPublic",
    "Metric",
    "MetricHistoryPublic",
    "MetricNamePublic",
    "MetricNamesPublic",
    "MetricPoint",
    "MetricRollup",
    "MetricSeriesPublic",
    "Run",
    "RunBase",
    "RunChange",
    "RunFile",
    "RunFilePublic",
    "RunFilesPublic",
    "RunLog",
    "RunMetricsPublic",
    "RunProperty",
    "RunPublic",
    "RunSpec",
    "RunTag",
    "RunTokenRequest",
    "RunsPublic",
    "TokenCreate",
    "TokenCreated",
    "TokenPublic",
    "TokensPublic",
    "WorkerPublic",
    "WorkersPublic",
    "check_cluster_name",
    "check_experiment_name",
    "check_token_name",
    "creation_timestamp",
    "optional_timestamp",
    "utcnow",
]
