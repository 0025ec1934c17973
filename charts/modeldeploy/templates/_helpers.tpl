{{/* Name of the chart, or nameOverride. */}}
{{- define "modeldeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, prefixed to the chart name unless it already contains it. */}}
{{- define "modeldeploy.fullname" -}}
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

{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modeldeploy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "modeldeploy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* [registry/]repository, then @digest (pins; the tag is ignored) or :tag (appVersion). */}}
{{- define "modeldeploy.image" -}}
{{- $image := .Values.image }}
{{- $name := $image.repository }}
{{- if $image.registry }}
{{- $name = printf "%s/%s" $image.registry $image.repository }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s@%s" $name $image.digest }}
{{- else }}
{{- printf "%s:%s" $name (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The operator's ServiceAccount, as the subject of a binding. */}}
{{- define "modeldeploy.subjects" -}}
- kind: ServiceAccount
  name: {{ include "modeldeploy.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* Where the Prometheus credentials Secret is mounted in the operator's pod. */}}
{{- define "modeldeploy.prometheusAuthDir" -}}
/var/run/secrets/modeldeploy/prometheus
{{- end }}

{{/* Where the Prometheus CA bundle (ConfigMap or Secret) is mounted. */}}
{{- define "modeldeploy.prometheusCADir" -}}
/var/run/secrets/modeldeploy/prometheus-ca
{{- end }}

{{/*
Refuses clusters older than Kubernetes 1.30: the CRD validates with CEL functions
(isQuantity, ...) that older apiservers do not have, so every ModelDeployment would be
refused. Not Chart.yaml's kubeVersion: `helm template` without --kube-version would refuse
to render. "-0" lets pre-release builds such as v1.30.2-gke.1 pass.
*/}}
{{- define "modeldeploy.requireKubeVersion" -}}
{{- if semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version }}
{{- fail (printf "modeldeploy needs Kubernetes 1.30 or later (the ModelDeployment CRD validates with CEL functions 1.30 added); this cluster is %s (with helm template: pass --kube-version)" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}

{{/*
The namespaced rules of the operator, for a ClusterRole (all namespaces) or a Role (each
watched namespace). Every rule is a call the operator makes; see the chart README.
*/}}
{{- define "modeldeploy.namespacedRules" -}}
# The resource it reconciles: Kopf lists and watches it (the operator's cache), the operator
# reads it fresh before a destructive step and removes consumed command annotations (merge
# patch).
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch]
# Status is written with PUT and the resourceVersion read (a stale decision is refused).
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/status]
  verbs: [update]
# Owned objects carry ownerReferences with blockOwnerDeletion: clusters that enforce
# OwnerReferencesPermissionEnforcement (e.g. OpenShift) require this on the owner.
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/finalizers]
  verbs: [update]
# Owned objects: listed and watched by label (the operator's cache; listed again before a
# destructive step), written by server-side apply (a PATCH that creates the object when it is
# missing, hence create), deleted when obsolete.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
# Pods of its revisions: their status says why a revision does not start (image pull, crash
# loop, unschedulable). Read only (listed and watched by label): the operator never writes a
# pod.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Its own Events on ModelDeployments (rollout steps, verdicts, rollbacks).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.rbac.readSecrets }}
# Prometheus credentials named by spec.prometheus.auth.secretRef: one named get, no list.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- if .Values.rbac.gatewayAPI }}
# traffic.mode gatewayAPI: the weights on the user's HTTPRoute's backendRefs (read by name
# each reconcile, JSON-patched; never created or deleted: it is the user's), and a watch
# (--watch-http-routes) so that someone else's change to them is undone at once.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}

{{/*
Alert annotations naming the owner of the ModelDeployment (labels joined from
modeldeploy_operator_owner_info; empty when spec.owner is not set). runbook_url is the
annotation Alertmanager receivers and Grafana link to.
*/}}
{{- define "modeldeploy.ownerAnnotations" -}}
owner: '{{ "{{" }} with $labels.team {{ "}}" }}{{ "{{" }} . {{ "}}" }}{{ "{{" }} with $labels.contact {{ "}}" }} ({{ "{{" }} . {{ "}}" }}){{ "{{" }} end {{ "}}" }}{{ "{{" }} end {{ "}}" }}'
runbook_url: '{{ "{{" }} $labels.runbook_url {{ "}}" }}'
{{- end }}
