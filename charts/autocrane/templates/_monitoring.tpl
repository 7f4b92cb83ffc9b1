{{- /* Monitoring (docs/monitoring.md): the label every metrics Service carries, and one metrics Service. */ -}}
{{- define "autocrane.metricsLabel" -}}
autocrane.io/metrics: "true"
{{- end -}}

{{- /* A metrics Service: (list $ component selector-template port). */ -}}
{{- define "autocrane.metricsService" -}}
{{- $ := index . 0 -}}{{- $component := index . 1 -}}{{- $selector := index . 2 -}}{{- $port := index . 3 -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ $.Release.Name }}-{{ $component }}-metrics
  labels:
    {{- include "autocrane.labels" $ | nindent 4 }}
    {{- include "autocrane.metricsLabel" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
  {{- if $.Values.metrics.service.scrapeAnnotations }}
  annotations:
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $port | quote }}
    prometheus.io/path: /metrics
  {{- end }}
spec:
  type: ClusterIP
  selector:
    {{- include $selector $ | nindent 4 }}
  ports:
    - name: metrics
      port: {{ $port }}
      targetPort: {{ $port }}
      protocol: TCP
{{- end -}}
