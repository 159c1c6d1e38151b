{{/* Names, labels and shared fragments of the NoRA operator chart. */}}

{{/* The chart name (nameOverride wins), at most 63 characters. */}}
{{- define "nora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects: fullnameOverride, else <release>-<chart> (the release name
alone when it already contains the chart name), at most 63 characters. */}}
{{- define "nora.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, as the helm.sh/chart label wants it. */}}
{{- define "nora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object of the release carries. */}}
{{- define "nora.labels" -}}
helm.sh/chart: {{ include "nora.chart" . }}
{{ include "nora.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: nora
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's Pods. */}}
{{- define "nora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "nora.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nora.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest when a digest is set, else repository:tag (tag defaults to
appVersion). */}}
{{- define "nora.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The kopf peering object's name. */}}
{{- define "nora.peeringName" -}}
{{- default (include "nora.fullname" .) .Values.peering.name }}
{{- end }}

{{/* "true" when the operator runs more than one replica (and so needs peering). */}}
{{- define "nora.peered" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{/* The namespaces the operator serves, or an empty list for the whole cluster; fails on duplicates. */}}
{{- define "nora.watchNamespaces" -}}
{{- $namespaces := .Values.watchNamespaces | default list }}
{{- if ne (len $namespaces) (len (uniq $namespaces)) }}
{{- fail "watchNamespaces: every namespace may appear only once" }}
{{- end }}
{{- toJson $namespaces }}
{{- end }}

{{/* The operator container's environment: its NORA_* settings (see src/nora/operator/settings.py).
Takes a dict with "root" (the chart context) and "namespaces" (the served namespaces, empty: all). */}}
{{- define "nora.env" -}}
{{- $v := .root.Values -}}
{{- if .namespaces }}
- name: NORA_NAMESPACES
  value: {{ join "," .namespaces | quote }}
{{- end }}
{{- if include "nora.peered" .root }}
- name: NORA_PEERING
  value: {{ include "nora.peeringName" .root | quote }}
- name: NORA_PEERING_LIFETIME_SECONDS
  value: {{ $v.peering.lifetimeSeconds | quote }}
{{- end }}
- name: NORA_METRICS_ADDRESS
  value: "0.0.0.0"
- name: NORA_METRICS_PORT
  value: {{ $v.metrics.port | quote }}
- name: NORA_LIVENESS_ENDPOINT
  value: {{ printf "http://0.0.0.0:%v/healthz" $v.healthPort | quote }}
{{- with $v.operator.trainCommand }}
- name: NORA_TRAIN_COMMAND
  value: {{ toJson . | quote }}
{{- end }}
{{- with $v.operator.testScoreCommand }}
- name: NORA_TEST_SCORE_COMMAND
  value: {{ toJson . | quote }}
{{- end }}
- name: NORA_JOB_TTL_SECONDS
  value: {{ $v.operator.jobTTLSeconds | quote }}
- name: NORA_RESYNC_SECONDS
  value: {{ $v.operator.resyncSeconds | quote }}
- name: NORA_API_WORKERS
  value: {{ $v.operator.apiWorkers | quote }}
- name: NORA_RECONCILE_WORKERS
  value: {{ $v.operator.reconcileWorkers | quote }}
- name: NORA_BREEDING_WORKERS
  value: {{ $v.operator.breedingWorkers | quote }}
{{- with $v.operator.s3Endpoint }}
- name: NORA_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $v.operator.s3Region }}
- name: NORA_S3_REGION
  value: {{ . | quote }}
{{- end }}
{{- with $v.operator.s3EndpointAllowlist }}
- name: NORA_S3_ENDPOINT_ALLOWLIST
  value: {{ join "," . | quote }}
{{- end }}
{{- with $v.operator.ambientCredentialsNamespaces }}
- name: NORA_AMBIENT_CREDENTIALS_NAMESPACES
  value: {{ join "," . | quote }}
{{- end }}
# The root filesystem is read-only: caches and temporary files go to the /tmp emptyDir.
- name: HOME
  value: /tmp
{{- range $v.extraEnv }}
{{- if hasKey . "value" }}
- name: {{ .name }}
  value: {{ .value | toString | quote }}
{{- else }}
- {{ toYaml . | nindent 2 | trim }}
{{- end }}
{{- end }}
{{- end }}

{{/* The RBAC rules of the operator's work in a served namespace: exactly the verbs it uses (see
src/nora/operator/cluster.py and handlers.py; kopf watches, patches finalizers and annotations, and
writes its progress to the status). Shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "nora.rules" -}}
# kopf watches Populations and patches its finalizer and annotations; the reconciler reads them.
- apiGroups: [nora.dev]
  resources: [populations]
  verbs: [get, list, watch, patch]
- apiGroups: [nora.dev]
  resources: [populations/status, generations/status]
  verbs: [patch]
# One Generation per round, created and read by the reconciler (never listed, updated or deleted).
- apiGroups: [nora.dev]
  resources: [generations]
  verbs: [get, create]
# Generations and Jobs set blockOwnerDeletion on their owner; clusters enforcing
# OwnerReferencesPermissionEnforcement require update on the owner's finalizers for that.
- apiGroups: [nora.dev]
  resources: [populations/finalizers, generations/finalizers]
  verbs: [update]
# Genome Jobs: kopf indexes and watches them, the reconciler creates them (garbage collection deletes them).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create]
# The model cache volume of a Population with spec.modelCache.storageClassName (owned by the Population).
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [create]
# The termination message of a failed genome's Pod.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# S3 credentials named by spec.storage.secretRef: read one by name, never listed.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Events about Populations and Generations (the operator's and kopf's); listed to find genome Jobs whose
# Pods cannot be created (FailedCreate).
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
{{- end }}

{{/* One NetworkPolicy egress rule to TCP "ports" of "cidrs" (any address when there are none). */}}
{{- define "nora.egressRule" -}}
- ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with .cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end }}
