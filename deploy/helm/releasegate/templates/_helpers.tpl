{{/* Common labels. */}}
{{- define "releasegate.labels" -}}
app.kubernetes.io/name: releasegate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The image: by digest when one is given (what was built and scanned), else by tag. */}}
{{- define "releasegate.image" -}}
{{- $repo := required "image.repository is required" .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .Values.image.digest) -}}
{{- fail (printf "image.digest must be sha256:<64 hex digits>, got %q" .Values.image.digest) -}}
{{- end -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* An environment's namespace: its own `namespace`, else releasegate-<name>. */}}
{{- define "releasegate.envNamespace" -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .name) -}}
{{- fail (printf "environment name %q is not a DNS label" .name) -}}
{{- end -}}
{{- default (printf "releasegate-%s" .name) .namespace -}}
{{- end -}}
