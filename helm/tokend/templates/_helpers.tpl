{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "tokend.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart> unless the release already contains it. */}}
{{- define "tokend.fullname" -}}
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

{{- define "tokend.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokend.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tokend.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tokend.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret holding the bootstrap token (or its seed). */}}
{{- define "tokend.bootstrapSecret" -}}
{{- default (printf "%s-bootstrap" (include "tokend.fullname" .)) .Values.bootstrap.existingSecret }}
{{- end }}

{{/* "true" when the chart runs on PostgreSQL (several replicas), "" on sled. */}}
{{- define "tokend.postgres" -}}
{{- if .Values.store.postgres.existingSecret }}true{{ end }}
{{- end }}
