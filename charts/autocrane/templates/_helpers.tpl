{{- define "autocrane.name" -}}autocrane{{- end -}}

{{- define "autocrane.webhookName" -}}{{ .Release.Name }}-injector{{- end -}}

{{- define "autocrane.labels" -}}
app.kubernetes.io/name: autocrane
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "autocrane.injectorSelector" -}}
app.kubernetes.io/name: autocrane
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end -}}

{{- define "autocrane.controllerName" -}}{{ .Release.Name }}-controller{{- end -}}

{{- define "autocrane.controllerSelector" -}}
app.kubernetes.io/name: autocrane
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "autocrane.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "autocrane.sidecarImage" -}}
{{ .Values.sidecarImage.repository }}:{{ .Values.sidecarImage.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "autocrane.tlsSecret" -}}
{{- if eq .Values.tls.mode "secret" -}}{{ required "tls.secretName is required when tls.mode=secret" .Values.tls.secretName }}
{{- else -}}{{ include "autocrane.webhookName" . }}-tls{{- end -}}
{{- end -}}

{{/* Restricted Pod Security for every container we run. */}}
{{- define "autocrane.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
