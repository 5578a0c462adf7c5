{{/*
The pod spec shared by the StatefulSet (sled: one replica, one volume) and
the Deployment (PostgreSQL: several replicas, no volume). Rendered at the
indentation of a pod template's "spec:".
*/}}
{{- define "tokend.podSpec" -}}
{{- $grpcPort := int .Values.service.grpcPort }}
{{- $healthPort := int .Values.service.healthPort }}
{{- $postgres := include "tokend.postgres" . }}
spec:
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  # tokend drains in-flight calls for shutdownGraceSeconds, then flushes.
  terminationGracePeriodSeconds: {{ add (int .Values.shutdownGraceSeconds) 5 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: tokend
      image: "{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - --listen=0.0.0.0:{{ $grpcPort }}
        - --health-listen=0.0.0.0:{{ $healthPort }}
        {{- if $postgres }}
        - --store-timeout={{ .Values.store.postgres.storeTimeout }}
        - --max-staleness={{ .Values.store.postgres.maxStaleness }}
        {{- else }}
        - --data-dir=/var/lib/tokend
        {{- end }}
        - --token-prefix={{ .Values.config.tokenPrefix }}
        - --max-tokens-per-owner={{ .Values.config.maxTokensPerOwner }}
        - --max-ttl={{ .Values.config.maxTtl }}
        - --default-ttl={{ .Values.config.defaultTtl }}
        {{- with .Values.config.auditLogFile }}
        - --audit-log-file={{ . }}
        {{- end }}
        - --last-used-flush-interval={{ .Values.config.lastUsedFlushInterval }}
        - --store-cache-mb={{ .Values.config.storeCacheMb }}
        - --fsync={{ .Values.config.fsync }}
        - --log-format={{ .Values.config.logFormat }}
        - --max-request-bytes={{ .Values.config.maxRequestBytes }}
        - --shutdown-grace={{ .Values.shutdownGraceSeconds }}s
        {{- with .Values.limits }}
        - --handshake-timeout={{ .handshakeTimeout }}
        - --max-connections={{ int64 .maxConnections }}
        - --keepalive-interval={{ .keepaliveInterval }}
        - --keepalive-timeout={{ .keepaliveTimeout }}
        - --max-concurrent-streams={{ int64 .maxConcurrentStreams }}
        - --max-header-bytes={{ int64 .maxHeaderBytes }}
        - --admin-timeout={{ .adminTimeout }}
        - --max-admin-inflight={{ int64 .maxAdminInflight }}
        - --abuse-cooldown={{ .abuseCooldown }}
        {{- end }}
        {{- if .Values.adminListener.enabled }}
        - --admin-listen=0.0.0.0:{{ .Values.service.adminPort }}
        {{- end }}
        {{- if .Values.metrics.enabled }}
        - --metrics-listen=0.0.0.0:{{ .Values.service.metricsPort }}
        {{- end }}
        {{- if .Values.tls.enabled }}
        - --tls-cert=/etc/tokend/tls/tls.crt
        - --tls-key=/etc/tokend/tls/tls.key
        {{- if .Values.tls.clientCASecretName }}
        - --tls-client-ca=/etc/tokend/client-ca/ca.crt
        {{- end }}
        {{- end }}
        {{- if .Values.bootstrap.existingSecret }}
        - --bootstrap-token-file=/etc/tokend/bootstrap/{{ .Values.bootstrap.existingSecretKey }}
        {{- else }}
        - --bootstrap-token-seed-file=/etc/tokend/bootstrap/seed
        {{- end }}
      env:
        - name: RUST_LOG
          value: {{ .Values.config.logLevel | quote }}
        {{- if $postgres }}
        # In the environment, not in args: the URL may hold a password.
        - name: TOKEND_STORE
          valueFrom:
            secretKeyRef:
              name: {{ .Values.store.postgres.existingSecret }}
              key: {{ .Values.store.postgres.existingSecretKey }}
        {{- end }}
      ports:
        - name: grpc
          containerPort: {{ $grpcPort }}
        - name: health
          containerPort: {{ $healthPort }}
        {{- if .Values.adminListener.enabled }}
        - name: admin
          containerPort: {{ .Values.service.adminPort }}
        {{- end }}
        {{- if .Values.metrics.enabled }}
        - name: metrics
          containerPort: {{ .Values.service.metricsPort }}
        {{- end }}
      # The health port (--health-listen) serves health checks alone, in
      # plaintext even with TLS on, so readiness also follows the staleness
      # watchdog of a PostgreSQL replica. Loading a million tokens takes
      # seconds; the startup probe allows three minutes.
      startupProbe:
        grpc:
          port: {{ $healthPort }}
          service: ""
        periodSeconds: 2
        failureThreshold: 90
      livenessProbe:
        grpc:
          port: {{ $healthPort }}
          service: ""
        periodSeconds: 10
        failureThreshold: 3
      readinessProbe:
        grpc:
          port: {{ $healthPort }}
          service: tokend.v1.VerifyService
        periodSeconds: 5
        failureThreshold: 2
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        runAsNonRoot: true
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        {{- if not $postgres }}
        - name: data
          mountPath: /var/lib/tokend
        {{- end }}
        - name: bootstrap
          mountPath: /etc/tokend/bootstrap
          readOnly: true
        {{- if .Values.tls.enabled }}
        - name: tls
          mountPath: /etc/tokend/tls
          readOnly: true
        {{- if .Values.tls.clientCASecretName }}
        - name: client-ca
          mountPath: /etc/tokend/client-ca
          readOnly: true
        {{- end }}
        {{- end }}
  volumes:
    - name: bootstrap
      secret:
        secretName: {{ include "tokend.bootstrapSecret" . }}
    {{- if .Values.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ required "tls.secretName is required when tls.enabled" .Values.tls.secretName }}
    {{- if .Values.tls.clientCASecretName }}
    - name: client-ca
      secret:
        secretName: {{ .Values.tls.clientCASecretName }}
    {{- end }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.affinity }}
  affinity:
    {{- toYaml .Values.affinity | nindent 4 }}
  {{- else if $postgres }}
  # Replicas on different nodes where the cluster allows: a node loss
  # then takes one replica, not all of them.
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "tokend.selectorLabels" . | nindent 16 }}
  {{- end }}
{{- end }}
