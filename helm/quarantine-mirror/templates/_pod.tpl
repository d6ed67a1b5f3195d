{{/* The mirror's pod template, shared by the Deployment and the StatefulSet. */}}
{{- define "qm.podTemplate" -}}
metadata:
  labels:
    {{- include "qm.mirrorSelectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed mirror.toml or Secret rolls the pods.
    checksum/config: {{ include "qm.mirrorToml" . | sha256sum }}
    checksum/secret: {{ toJson .Values.secret | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  automountServiceAccountToken: false
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  # SIGTERM starts the mirror's graceful stop (shutdown_grace); Kubernetes waits longer.
  terminationGracePeriodSeconds: {{ add .Values.shutdownGraceSeconds .Values.terminationExtraSeconds }}
  containers:
    - name: mirror
      image: {{ include "qm.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["serve"]
      ports:
        - name: http
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
      env:
        - name: MIRROR_CONFIG
          value: /etc/quarantine-mirror/mirror.toml
        - name: MIRROR_LISTEN
          value: "0.0.0.0:{{ .Values.containerPort }}"
        - name: MIRROR_WORKERS
          value: {{ .Values.workers | quote }}
        - name: MIRROR_DATA_DIR
          value: /var/cache/quarantine-mirror
        - name: MIRROR_STATE_DIR
          value: /var/lib/quarantine-mirror
        - name: TMPDIR
          value: /tmp
        {{- if .Values.redis.enabled }}
        - name: MIRROR_REDIS_URL
          value: "redis://{{ include "qm.redisName" . }}:6379/0"
        {{- else }}
        - name: MIRROR_REDIS_URL
          valueFrom:
            secretKeyRef: {name: {{ include "qm.secretName" . }}, key: redis-url, optional: true}
        {{- end }}
        {{- range $var, $key := dict "MIRROR_ADMIN_TOKENS" "admin-tokens" "MIRROR_ADMIN_READ_TOKENS" "admin-read-tokens" "MIRROR_NPM_UPSTREAM_AUTH" "npm-upstream-auth" "MIRROR_PYPI_UPSTREAM_AUTH" "pypi-upstream-auth" "MIRROR_MAVEN_UPSTREAM_AUTH" "maven-upstream-auth" }}
        - name: {{ $var }}
          valueFrom:
            secretKeyRef: {name: {{ include "qm.secretName" $ }}, key: {{ $key }}, optional: true}
        {{- end }}
      livenessProbe:
        httpGet: {path: /healthz, port: http}
        periodSeconds: 10
        timeoutSeconds: 3
        failureThreshold: 6
      readinessProbe:
        httpGet: {path: /readyz, port: http}
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 2
      startupProbe:
        httpGet: {path: /healthz, port: http}
        periodSeconds: 2
        failureThreshold: 60
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        - {name: config, mountPath: /etc/quarantine-mirror, readOnly: true}
        - {name: cache, mountPath: /var/cache/quarantine-mirror}
        - {name: state, mountPath: /var/lib/quarantine-mirror}
        - {name: tmp, mountPath: /tmp}
  volumes:
    - name: config
      configMap:
        name: {{ include "qm.fullname" . }}-config
    - name: tmp
      emptyDir: {}
    {{- if not .Values.statefulSet.enabled }}
    - name: cache
      {{- if .Values.persistence.cache.enabled }}
      persistentVolumeClaim:
        claimName: {{ default (printf "%s-cache" (include "qm.fullname" .)) .Values.persistence.cache.existingClaim }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
    {{- if or (include "qm.sharedState" .) (not .Values.persistence.state.enabled) }}
    - name: state
      emptyDir: {}
    {{- else if not .Values.statefulSet.enabled }}
    - name: state
      persistentVolumeClaim:
        claimName: {{ default (printf "%s-state" (include "qm.fullname" .)) .Values.persistence.state.existingClaim }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
