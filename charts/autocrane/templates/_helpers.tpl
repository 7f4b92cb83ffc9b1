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

{{- define "autocrane.repositoryName" -}}{{ .Release.Name }}-datarepository{{- end -}}

{{- define "autocrane.repositorySelector" -}}
app.kubernetes.io/name: autocrane
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: datarepository
{{- end -}}

{{/* repository@digest when a digest is given, else repository:tag (default the appVersion). */}}
{{- define "autocrane.imageRef" -}}
{{- $image := index . 0 -}}{{- $chart := index . 1 -}}
{{- if $image.digest -}}{{ $image.repository }}@{{ $image.digest }}
{{- else -}}{{ $image.repository }}:{{ $image.tag | default $chart.AppVersion }}{{- end -}}
{{- end -}}

{{- define "autocrane.image" -}}{{ include "autocrane.imageRef" (list .Values.image .Chart) }}{{- end -}}
{{- define "autocrane.sidecarImage" -}}{{ include "autocrane.imageRef" (list .Values.sidecarImage .Chart) }}{{- end -}}
{{- define "autocrane.repositoryImage" -}}{{ include "autocrane.imageRef" (list .Values.dataRepositoryImage .Chart) }}{{- end -}}

{{- define "autocrane.tlsSecret" -}}
{{- if eq .Values.tls.mode "secret" -}}{{ required "tls.secretName is required when tls.mode=secret" .Values.tls.secretName }}
{{- else -}}{{ include "autocrane.webhookName" . }}-tls{{- end -}}
{{- end -}}

{{/* The data repository's URL, for the injector and the controller alike: nobody types it twice. */}}
{{- define "autocrane.repositoryURL" -}}
{{- if .Values.dataRepository.enabled -}}
http://{{ include "autocrane.repositoryName" . }}.{{ .Release.Namespace }}.svc:{{ .Values.dataRepository.port }}
{{- else -}}{{ .Values.dataRepository.externalURL }}{{- end -}}
{{- end -}}

{{/* The Secret holding the repository's write token (key "token"), or nothing without one. */}}
{{- define "autocrane.repositoryTokenSecret" -}}
{{- if .Values.dataRepository.token.existingSecret -}}{{ .Values.dataRepository.token.existingSecret }}
{{- else if .Values.dataRepository.enabled -}}{{ include "autocrane.repositoryName" . }}-token{{- end -}}
{{- end -}}

{{/* The injector's configuration file: the user's keys over the chart's defaults; the URL always the chart's. */}}
{{- define "autocrane.injectorConfig" -}}
{{- if hasKey .Values.injector "data_repository_url" -}}
{{- fail "injector.data_repository_url is set by the chart: use dataRepository (or dataRepository.externalURL with dataRepository.enabled=false)" -}}
{{- end -}}
{{- $defaults := dict "datadeployer_image" (include "autocrane.sidecarImage" .) "watchdoghealthz_image" (include "autocrane.sidecarImage" .) "image_pull_policy" .Values.sidecarImage.pullPolicy -}}
{{- $config := merge (deepCopy .Values.injector) $defaults -}}
{{- with include "autocrane.repositoryURL" . -}}{{- $_ := set $config "data_repository_url" . -}}{{- end -}}
{{- toYaml $config -}}
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

{{/* The pod-level fields every component takes from its values: (list $ .Values.<component> "<selector template>"). */}}
{{- define "autocrane.podPlacement" -}}
{{- $root := index . 0 -}}{{- $values := index . 1 -}}{{- $selector := index . 2 -}}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- range . }}
  - {{- toYaml (merge (dict) . (dict "labelSelector" (dict "matchLabels" (include $selector $root | fromYaml)))) | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* podAnnotations and podLabels of a component's pod template: (list $ .Values.<component> "<selector template>"). */}}
{{- define "autocrane.podLabels" -}}
{{- $root := index . 0 -}}{{- $values := index . 1 -}}{{- $selector := index . 2 -}}
{{- toYaml (merge (dict) (include $selector $root | fromYaml) $values.podLabels) }}
{{- end -}}
