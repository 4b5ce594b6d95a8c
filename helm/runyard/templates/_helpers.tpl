{{/* Names, labels and shared pieces of the Runyard chart. */}}

{{- define "runyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's resource name: "<fullname>-<component>" within 63 characters. */}}
{{- define "runyard.componentName" -}}
{{- printf "%s-%s" (include "runyard.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runyard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "api"). */}}
{{- define "runyard.labels" -}}
helm.sh/chart: {{ include "runyard.chart" .root }}
{{ include "runyard.selectorLabels" . }}
app.kubernetes.io/part-of: runyard
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "runyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "runyard.secretName" -}}
{{- default (include "runyard.componentName" (dict "root" . "component" "secrets")) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "runyard.configMapName" -}}
{{- include "runyard.componentName" (dict "root" . "component" "clusters") -}}
{{- end -}}

{{- define "runyard.apiServiceName" -}}
{{- include "runyard.componentName" (dict "root" . "component" "api") -}}
{{- end -}}

{{/* The API as workers (and the scheduler's start-up wait) reach it. */}}
{{- define "runyard.apiUrl" -}}
{{- printf "http://%s:%v" (include "runyard.apiServiceName" .) .Values.api.service.port -}}
{{- end -}}

{{- define "runyard.redisHost" -}}
{{- include "runyard.componentName" (dict "root" . "component" "redis") -}}
{{- end -}}

{{- define "runyard.postgresqlHost" -}}
{{- include "runyard.componentName" (dict "root" . "component" "postgresql") -}}
{{- end -}}

{{/* RUNYARD_REDIS_URL from the Secret (every Runyard process needs it). */}}
{{- define "runyard.env.redis" -}}
- name: RUNYARD_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "runyard.secretName" . }}
      key: redis-url
{{- end -}}

{{/* RUNYARD_DATABASE_URL from the Secret (API and scheduler only: workers never get it). */}}
{{- define "runyard.env.database" -}}
- name: RUNYARD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "runyard.secretName" . }}
      key: database-url
{{- end -}}

{{/*
A generated secret value that outlives upgrades: the one given in values, else the one the
installed Secret holds (its .data, base64), else "new". Call with
(dict "given" VALUE "data" SECRET-DATA "key" KEY "new" FRESH).
*/}}
{{- define "runyard.keptSecret" -}}
{{- if .given -}}
{{- .given -}}
{{- else if hasKey .data .key -}}
{{- index .data .key | b64dec -}}
{{- else -}}
{{- .new -}}
{{- end -}}
{{- end -}}

{{/* An environment variable from a key of the Runyard Secret; call with
(dict "root" $ "name" "RUNYARD_TOKEN" "key" "worker-token"). */}}
{{- define "runyard.env.fromSecret" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "runyard.secretName" .root }}
      key: {{ .key }}
{{- end -}}

{{/* The Secret's key of a cluster's worker token; call with the cluster's name. */}}
{{- define "runyard.workerTokenKey" -}}
{{- printf "worker-token-%s" . -}}
{{- end -}}

{{/* Where the API reads a worker pool's token: RUNYARD_BOOTSTRAP_WORKER_TOKEN_<POOL>
(api/app.py: pool_token_variable); call with the pool's (here: the cluster's) name. */}}
{{- define "runyard.poolTokenVariable" -}}
{{- printf "RUNYARD_BOOTSTRAP_WORKER_TOKEN_%s" (. | upper | replace "-" "_") -}}
{{- end -}}

{{/* RUNYARD_BOOTSTRAP_WORKER_TOKENS: each cluster's worker Deployment is a pool bound to
that cluster alone ("cpu=cpu gpu=gpu"). */}}
{{- define "runyard.workerPools" -}}
{{- $pools := list -}}
{{- range .Values.clusters -}}
{{- $pools = append $pools (printf "%s=%s" .name .name) -}}
{{- end -}}
{{- join " " $pools -}}
{{- end -}}

{{/* Pod-level security of the non-root Runyard containers (uid of deploy/Dockerfile). */}}
{{- define "runyard.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "runyard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
A value as TOML (for the clusters file): tables inline, arrays, and scalars as JSON, which
TOML reads the same for strings, numbers and booleans.
*/}}
{{- define "runyard.tomlValue" -}}
{{- if kindIs "map" . -}}
{ {{- range $i, $k := keys . | sortAlpha -}}{{- if $i }}, {{ end -}}{{ $k | quote }} = {{ include "runyard.tomlValue" (index $ $k) }}{{- end -}} }
{{- else if kindIs "slice" . -}}
[{{- range $i, $v := . -}}{{- if $i }}, {{ end -}}{{ include "runyard.tomlValue" $v }}{{- end -}}]
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/* Fails the render on a cluster entry Runyard would refuse, naming it. */}}
{{- define "runyard.checkClusters" -}}
{{- $seen := dict -}}
{{- range .Values.clusters -}}
{{- $name := required "every entry of .Values.clusters needs a name" .name -}}
{{- if not (regexMatch "^[a-z][a-z0-9-]{0,30}[a-z0-9]$" $name) -}}
{{- fail (printf "clusters: %q: names are 2-32 characters: lowercase letters, digits and '-', starting with a letter and not ending with '-'" $name) -}}
{{- end -}}
{{- if hasKey $seen $name -}}
{{- fail (printf "clusters: %q is listed twice" $name) -}}
{{- end -}}
{{- $_ := set $seen $name true -}}
{{- if lt (int (default 1 .nodes)) 1 -}}
{{- fail (printf "clusters: %q: nodes must be at least 1" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
