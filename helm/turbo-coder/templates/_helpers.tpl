{{/* The chart's name, for labels. */}}
{{- define "turbo-coder.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's prefix for every object: <release>-turbo-coder, or <release> when it already says turbo-coder. */}}
{{- define "turbo-coder.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "turbo-coder.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "turbo-coder.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: turbo-coder
{{- end -}}

{{/* The one image every service runs. */}}
{{- define "turbo-coder.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The bundled NATS (nats.enabled): StatefulSet and Service name. */}}
{{- define "turbo-coder.natsName" -}}
{{- printf "%s-nats" (include "turbo-coder.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where the services find the bundled NATS; [cluster] nats_url in the default `config`. */}}
{{- define "turbo-coder.natsUrl" -}}
{{- printf "nats://%s:4222" (include "turbo-coder.natsName" .) -}}
{{- end -}}

{{/* The bundled Postgres (postgres.enabled): StatefulSet, Service and Secret name. */}}
{{- define "turbo-coder.postgresName" -}}
{{- printf "%s-postgres" (include "turbo-coder.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "turbo-coder.gatewaySecretName" -}}
{{- .Values.gateway.jwtSecretName | default (printf "%s-gateway" (include "turbo-coder.fullname" .) | trunc 63 | trimSuffix "-") -}}
{{- end -}}

{{/* Selector labels of one component (chart root in .root, component name in .component). */}}
{{- define "turbo-coder.selectorLabels" -}}
app.kubernetes.io/name: {{ include "turbo-coder.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Environment the chart adds to every turbo-coder container so the services find the bundled NATS
and Postgres, run their tools on the tool-runner and retrieve context from the knowledge service
(nothing when all four are disabled). An entry of `env` with the same name replaces
the chart's. The password comes from the Secret and is spliced into the URL by Kubernetes'
$(VAR) expansion, which needs TURBO_PG_PASSWORD listed first; it is alphanumeric (see
postgres-secret.yaml), so it needs no URL escaping.
*/}}
{{- define "turbo-coder.bundledEnv" -}}
{{- $own := list -}}
{{- range .Values.env }}{{ $own = append $own .name }}{{ end -}}
{{- if and .Values.nats.enabled (not (has "TURBO_CODER__CLUSTER__NATS_URL" $own)) }}
- name: TURBO_CODER__CLUSTER__NATS_URL
  value: {{ include "turbo-coder.natsUrl" . | quote }}
{{- end }}
{{- if and .Values.toolRunner.enabled (eq (.Values.toolRunner.route | default "grpc") "queue") }}
{{- if not (has "TURBO_CODER__CLUSTER__TOOL_RUNNER" $own) }}
- name: TURBO_CODER__CLUSTER__TOOL_RUNNER
  value: "queue"
{{- end }}
{{- else if and .Values.toolRunner.enabled (not (has "TURBO_CODER__CLUSTER__TOOL_RUNNER_URL" $own)) }}
- name: TURBO_CODER__CLUSTER__TOOL_RUNNER_URL
  value: {{ printf "http://%s-tool-runner:%v" (include "turbo-coder.fullname" .) .Values.toolRunner.port | quote }}
{{- end }}
{{- if and .Values.knowledge.enabled (not (has "TURBO_CODER__KNOWLEDGE__URL" $own)) }}
- name: TURBO_CODER__KNOWLEDGE__URL
  value: {{ printf "http://%s-knowledge:%v" (include "turbo-coder.fullname" .) .Values.knowledge.port | quote }}
{{- end }}
{{- if and .Values.gateway.enabled (not (has "TURBO_CODER__GATEWAY__JWT_SECRET" $own)) }}
- name: TURBO_CODER__GATEWAY__JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "turbo-coder.gatewaySecretName" . }}
      key: jwt-secret
{{- end }}
{{- if and .Values.gateway.enabled .Values.gateway.jwksUrl (not (has "TURBO_CODER__GATEWAY__JWKS_URL" $own)) }}
- name: TURBO_CODER__GATEWAY__JWT_ALGORITHM
  value: "RS256"
- name: TURBO_CODER__GATEWAY__JWKS_URL
  value: {{ .Values.gateway.jwksUrl | quote }}
{{- end }}
{{- if and .Values.gateway.enabled .Values.orchestrator.enabled (not (has "TURBO_CODER__GATEWAY__ORCHESTRATOR_URL" $own)) }}
- name: TURBO_CODER__GATEWAY__ORCHESTRATOR_URL
  value: {{ printf "http://%s-orchestrator:%v" (include "turbo-coder.fullname" .) .Values.orchestrator.port | quote }}
{{- end }}
{{- if and .Values.postgres.enabled (not (has "TURBO_CODER__STORE__URL" $own)) }}
- name: TURBO_PG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "turbo-coder.postgresName" . }}
      key: password
- name: TURBO_CODER__STORE__URL
  value: {{ printf "postgres://%s:$(TURBO_PG_PASSWORD)@%s:5432/%s" .Values.postgres.user (include "turbo-coder.postgresName" .) .Values.postgres.database | quote }}
{{- end }}
{{- end -}}

{{/* The config map every service mounts. */}}
{{- define "turbo-coder.configName" -}}
{{- printf "%s-config" (include "turbo-coder.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
One service of the cluster: a Deployment running `turbo-coder serve <service> --listen
0.0.0.0:<port> [--role <role>]`, probed over gRPC health checking, and its Service.
Arguments (a dict):
  root         the chart's top-level context ($)
  component    object name suffix and component label, e.g. orchestrator, agent-worker-coder
  service      the `serve` argument, e.g. agent-worker
  role         agent-worker role, or "" for the other services
  replicas     pod count
  port         gRPC port (container and Service)
  resources    container resources
  grpcService  the gRPC service readiness asks about; it turns NOT_SERVING when the process
               starts draining, so the pod leaves the Service's endpoints first
  strategy     the Deployment's update strategy, optional (Kubernetes' default when empty)
*/}}
{{- define "turbo-coder.component" -}}
{{- $root := .root -}}
{{- $name := printf "%s-%s" (include "turbo-coder.fullname" $root) .component | trunc 63 | trimSuffix "-" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "turbo-coder.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: {{ .replicas }}
  {{- with .strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ include "turbo-coder.name" $root }}
      app.kubernetes.io/instance: {{ $root.Release.Name }}
      app.kubernetes.io/component: {{ .component }}
  template:
    metadata:
      labels:
        {{- include "turbo-coder.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      annotations:
        # Restart the pods when the configuration changes.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- if kindIs "bool" .hostUsers }}
      hostUsers: {{ .hostUsers }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .service }}
          image: {{ include "turbo-coder.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command:
            - turbo-coder
            - serve
            - {{ .service }}
            - --listen
            - {{ printf "0.0.0.0:%v" .port | quote }}
            {{- with .role }}
            - --role
            - {{ . | quote }}
            {{- end }}
          env:
            - name: TURBO_CODER_CONFIG
              value: /etc/turbo-coder/config.toml
            {{- with include "turbo-coder.bundledEnv" $root }}
            {{- . | trim | nindent 12 }}
            {{- end }}
            {{- with $root.Values.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: grpc
              containerPort: {{ .port }}
              protocol: TCP
          readinessProbe:
            grpc:
              port: {{ .port }}
              service: {{ .grpcService | quote }}
            periodSeconds: {{ $root.Values.probes.readiness.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.readiness.failureThreshold }}
          livenessProbe:
            # The whole server (service ""), which stays SERVING while it drains.
            grpc:
              port: {{ .port }}
            initialDelaySeconds: {{ $root.Values.probes.liveness.initialDelaySeconds }}
            periodSeconds: {{ $root.Values.probes.liveness.periodSeconds }}
            failureThreshold: {{ $root.Values.probes.liveness.failureThreshold }}
          securityContext:
            {{- toYaml (.securityContext | default $root.Values.securityContext) | nindent 12 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/turbo-coder
              readOnly: true
            # store.data_dir: project workspaces and task baselines, shared by the orchestrator,
            # the agent workers and the tool-runner.
            - name: data
              mountPath: /var/lib/turbo-coder
      volumes:
        - name: config
          configMap:
            name: {{ include "turbo-coder.configName" $root }}
        - name: data
          {{- if $root.Values.sharedData.existingClaim }}
          persistentVolumeClaim:
            claimName: {{ $root.Values.sharedData.existingClaim | quote }}
          {{- else }}
          # Without a shared ReadWriteMany claim each pod has its own directory: fine for trying
          # the chart, not for tasks whose phases run on different pods.
          emptyDir: {}
          {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "turbo-coder.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  type: {{ $root.Values.service.type }}
  selector:
    app.kubernetes.io/name: {{ include "turbo-coder.name" $root }}
    app.kubernetes.io/instance: {{ $root.Release.Name }}
    app.kubernetes.io/component: {{ .component }}
  ports:
    - name: grpc
      port: {{ .port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
{{- end -}}
