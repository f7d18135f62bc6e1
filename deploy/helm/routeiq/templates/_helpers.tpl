{{/* Names ------------------------------------------------------------------------ */}}

{{- define "routeiq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-routeiq, or the release name alone when it already says routeiq. Component
names append "-<component>", so the base stays short enough for them. */}}
{{- define "routeiq.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* (dict "root" $ "component" "dataplane") */}}
{{- define "routeiq.componentName" -}}
{{- printf "%s-%s" (include "routeiq.fullname" .root) .component -}}
{{- end -}}

{{- define "routeiq.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------------- */}}

{{/* (dict "root" $ "component" "dataplane") */}}
{{- define "routeiq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "routeiq.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* (dict "root" $ "component" "dataplane") */}}
{{- define "routeiq.labels" -}}
{{ include "routeiq.selectorLabels" . }}
helm.sh/chart: {{ include "routeiq.chart" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: routeiq
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Images ----------------------------------------------------------------------- */}}

{{/* (dict "root" $ "image" .Values.dataplane.image): [registry/]repository(:tag|@digest);
global.imageRegistry wins over the image's own registry. */}}
{{- define "routeiq.image" -}}
{{- $registry := .root.Values.global.imageRegistry | default .image.registry -}}
{{- $ref := .image.repository -}}
{{- if $registry -}}
{{- $ref = printf "%s/%s" (trimSuffix "/" $registry) $ref -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (.image.tag | default .root.Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{- define "routeiq.imagePullSecrets" -}}
{{- $secrets := concat (.Values.global.imagePullSecrets | default list) (.Values.imagePullSecrets | default list) -}}
{{- if $secrets }}
imagePullSecrets:
{{- range $secrets }}
{{- if kindIs "string" . }}
  - name: {{ . }}
{{- else }}
  - name: {{ .name }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Service account and security ------------------------------------------------- */}}

{{- define "routeiq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "routeiq.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The migration Job runs before the release's own objects exist, so it gets a hook
ServiceAccount of its own when the chart creates them. */}}
{{- define "routeiq.migrationServiceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- printf "%s-migrate" (include "routeiq.fullname" .) -}}
{{- else -}}
{{- include "routeiq.serviceAccountName" . -}}
{{- end -}}
{{- end -}}

{{- define "routeiq.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "routeiq.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{/* Scheduling for a component's pod spec: (dict "root" $ "component" "dataplane" "values" .Values.dataplane).
topologySpreadConstraints without a labelSelector get the component's selector labels. */}}
{{- define "routeiq.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .values.topologySpreadConstraints }}
{{- $selector := include "routeiq.selectorLabels" . | fromYaml }}
topologySpreadConstraints:
{{- range .values.topologySpreadConstraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
  - {{ toYaml $c | nindent 4 | trim }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Secrets ---------------------------------------------------------------------- */}}

{{- define "routeiq.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "routeiq.fullname" .) -}}
{{- end -}}

{{/* An env entry from the RouteIQ Secret: (dict "root" $ "env" "DATABASE_URL" "key" "databaseUrl" "optional" false) */}}
{{- define "routeiq.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "routeiq.secretName" .root }}
      key: {{ index .root.Values.secrets.keys .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* A value of the chart-created Secret: (dict "root" $ "key" "saltKey" "generate" true).
The value given, else the one already in the cluster, else (when generate) a new random
one. */}}
{{- define "routeiq.secretValue" -}}
{{- $value := index .root.Values.secrets .key | default "" -}}
{{- if not $value -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (include "routeiq.secretName" .root) | default dict -}}
{{- $stored := dig "data" (index .root.Values.secrets.keys .key) "" $existing -}}
{{- if $stored -}}
{{- $value = b64dec $stored -}}
{{- else if .generate -}}
{{- $value = randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- $value -}}
{{- end -}}

{{/* Hook annotations for what the migration Job reads (Secret, ConfigMap, ServiceAccount,
NetworkPolicy): created before it, at a lower weight, and replaced on each upgrade. */}}
{{- define "routeiq.migrationRuns" -}}
{{- if and .Values.controlplane.enabled .Values.migration.enabled -}}true{{- end -}}
{{- end -}}

{{- define "routeiq.preHookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: "-10"
helm.sh/hook-delete-policy: before-hook-creation
{{- end -}}

{{/* NATS ------------------------------------------------------------------------- */}}

{{- define "routeiq.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s:4222" (include "routeiq.componentName" (dict "root" . "component" "nats")) -}}
{{- else -}}
{{- required "nats.url is required when nats.enabled is false and a component attaches to NATS" .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{/* The NATS client settings both planes share: URL and credentials (TLS files:
routeiq.tlsEnv). */}}
{{- define "routeiq.natsEnv" -}}
- name: ROUTEIQ_NATS_URL
  value: {{ include "routeiq.natsUrl" . | quote }}
{{- $auth := .Values.nats.auth.type }}
{{- if eq $auth "token" }}
{{ include "routeiq.secretEnv" (dict "root" . "env" "ROUTEIQ_NATS_TOKEN" "key" "natsToken") }}
{{- else if eq $auth "userPassword" }}
{{ include "routeiq.secretEnv" (dict "root" . "env" "ROUTEIQ_NATS_USER" "key" "natsUser") }}
{{ include "routeiq.secretEnv" (dict "root" . "env" "ROUTEIQ_NATS_PASSWORD" "key" "natsPassword") }}
{{- else if eq $auth "creds" }}
- name: ROUTEIQ_NATS_CREDS
  value: /etc/routeiq/nats/nats.creds
{{- end }}
{{- end -}}

{{- define "routeiq.natsVolumeMounts" -}}
{{- if eq .Values.nats.auth.type "creds" }}
- name: nats-creds
  mountPath: /etc/routeiq/nats
  readOnly: true
{{- end }}
{{- end -}}

{{- define "routeiq.natsVolumes" -}}
{{- if eq .Values.nats.auth.type "creds" }}
- name: nats-creds
  secret:
    secretName: {{ include "routeiq.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.secrets.keys.natsCreds }}
        path: nats.creds
{{- end }}
{{- end -}}

{{/* NetworkPolicy egress rules -------------------------------------------------- */}}

{{/* A rule to `to` peers (empty: any address) on TCP ports: (dict "to" list "ports" list) */}}
{{- define "routeiq.egressRule" -}}
{{- if .to -}}
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
{{- else -}}
- ports:
{{- end }}
    {{- range .ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end -}}

{{- define "routeiq.egressDns" -}}
{{- if .Values.networkPolicy.dns.to -}}
- to:
    {{- toYaml .Values.networkPolicy.dns.to | nindent 4 }}
  ports:
{{- else -}}
- ports:
{{- end }}
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end -}}

{{- define "routeiq.egressNats" -}}
{{- if .Values.nats.enabled -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "routeiq.selectorLabels" (dict "root" . "component" "nats") | nindent 10 }}
  ports:
    - protocol: TCP
      port: 4222
{{- else -}}
{{ include "routeiq.egressRule" (dict "to" .Values.nats.to "ports" (list .Values.nats.port)) }}
{{- end -}}
{{- end -}}

{{- define "routeiq.egressDatabase" -}}
{{ include "routeiq.egressRule" (dict "to" .Values.controlplane.database.to "ports" (list .Values.controlplane.database.port)) }}
{{- end -}}

{{/* An ingress rule from `from` peers (empty: anyone) on one TCP port: (dict "from" list "port" 4000) */}}
{{- define "routeiq.ingressRule" -}}
{{- if .from -}}
- from:
    {{- toYaml .from | nindent 4 }}
  ports:
{{- else -}}
- ports:
{{- end }}
    - protocol: TCP
      port: {{ .port }}
{{- end -}}

{{/* TLS -------------------------------------------------------------------------- */}}

{{/* Every TLS Secret is mounted read-only at /etc/routeiq/tls/<name>/, the whole Secret
volume (never a subPath), so a renewed certificate reaches the files and the binaries
reload it without a restart. */}}
{{- define "routeiq.tlsDir" -}}
/etc/routeiq/tls
{{- end -}}

{{/* The TLS Secrets a component's pods mount: (dict "root" $ "component" "dataplane"),
"dataplane", "controlplane", "admin" or "migrate". A JSON list of {name, secret, keys,
private}; routeiq.tlsEnv, routeiq.tlsVolumes and routeiq.tlsVolumeMounts read it. */}}
{{- define "routeiq.tlsEntries" -}}
{{- $v := .root.Values -}}
{{- $tls := $v.tls -}}
{{- $c := .component -}}
{{- $pair := list "tls.crt" "tls.key" -}}
{{- $ca := list "ca.crt" -}}
{{- $entries := list -}}
{{- if and $tls.enabled (has $c (list "dataplane" "controlplane" "admin")) -}}
{{- $entries = append $entries (dict "name" "server" "secret" (index $tls $c).existingSecret "keys" $pair "private" true) -}}
{{- /* The admin API verifies the control plane with the CA; with mtls the control plane
verifies the admin API's client certificate with it. */ -}}
{{- if or (eq $c "admin") (and (eq $c "controlplane") $tls.mtls) -}}
{{- $entries = append $entries (dict "name" "ca" "secret" $tls.caSecret "keys" $ca) -}}
{{- end -}}
{{- if and (eq $c "admin") $tls.mtls -}}
{{- $entries = append $entries (dict "name" "controlplane-client" "secret" $tls.adminClient.existingSecret "keys" $pair "private" true) -}}
{{- end -}}
{{- end -}}
{{- $natsClient := or (eq $c "controlplane") (and (eq $c "dataplane") (eq $v.dataplane.mode "attached")) -}}
{{- if and $natsClient $tls.nats.enabled -}}
{{- with $tls.nats.caSecret -}}
{{- $entries = append $entries (dict "name" "nats-ca" "secret" . "keys" $ca) -}}
{{- end -}}
{{- with $tls.nats.clientSecret -}}
{{- $entries = append $entries (dict "name" "nats-client" "secret" . "keys" $pair "private" true) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $c "dataplane") $v.redis.enabled $tls.redis.caSecret -}}
{{- $entries = append $entries (dict "name" "redis-ca" "secret" $tls.redis.caSecret "keys" $ca) -}}
{{- end -}}
{{- if and (has $c (list "controlplane" "migrate")) $tls.postgres.caSecret -}}
{{- $entries = append $entries (dict "name" "postgres-ca" "secret" $tls.postgres.caSecret "keys" $ca) -}}
{{- end -}}
{{- toJson $entries -}}
{{- end -}}

{{/* The environment naming those files: (dict "root" $ "component" "dataplane") */}}
{{- define "routeiq.tlsEnv" -}}
{{- $dir := include "routeiq.tlsDir" .root -}}
{{- $c := .component -}}
{{- range include "routeiq.tlsEntries" . | fromJsonArray }}
{{- $path := printf "%s/%s" $dir .name }}
{{- if eq .name "server" }}
- name: ROUTEIQ_TLS_CERT
  value: {{ $path }}/tls.crt
- name: ROUTEIQ_TLS_KEY
  value: {{ $path }}/tls.key
{{- else if and (eq .name "ca") (eq $c "controlplane") }}
- name: ROUTEIQ_TLS_CLIENT_CA
  value: {{ $path }}/ca.crt
{{- else if eq .name "ca" }}
- name: ROUTEIQ_CONTROLPLANE_CA
  value: {{ $path }}/ca.crt
{{- else if eq .name "controlplane-client" }}
- name: ROUTEIQ_CONTROLPLANE_CERT
  value: {{ $path }}/tls.crt
- name: ROUTEIQ_CONTROLPLANE_KEY
  value: {{ $path }}/tls.key
{{- else if eq .name "nats-ca" }}
- name: ROUTEIQ_NATS_TLS_CA
  value: {{ $path }}/ca.crt
{{- else if eq .name "nats-client" }}
- name: ROUTEIQ_NATS_TLS_CERT
  value: {{ $path }}/tls.crt
- name: ROUTEIQ_NATS_TLS_KEY
  value: {{ $path }}/tls.key
{{- else if eq .name "redis-ca" }}
- name: REDIS_TLS_CA
  value: {{ $path }}/ca.crt
{{- else if eq .name "postgres-ca" }}
{{- /* libpq's variables, which sqlx reads too; sslmode and sslrootcert in DATABASE_URL
win over them. */}}
- name: PGSSLROOTCERT
  value: {{ $path }}/ca.crt
- name: PGSSLMODE
  value: {{ $.root.Values.tls.postgres.sslMode | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "routeiq.tlsVolumeMounts" -}}
{{- $dir := include "routeiq.tlsDir" .root -}}
{{- range include "routeiq.tlsEntries" . | fromJsonArray }}
- name: tls-{{ .name }}
  mountPath: {{ $dir }}/{{ .name }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "routeiq.tlsVolumes" -}}
{{- range include "routeiq.tlsEntries" . | fromJsonArray }}
- name: tls-{{ .name }}
  secret:
    secretName: {{ .secret }}
    defaultMode: {{ ternary "0440" "0444" (.private | default false) }}
    items:
      {{- range .keys }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* http or https: how the RouteIQ listeners serve. */}}
{{- define "routeiq.scheme" -}}
{{- ternary "https" "http" (.Values.tls.enabled | default false) -}}
{{- end -}}

{{/* Probes ----------------------------------------------------------------------- */}}

{{/* (dict "path" "/health/readiness" "port" "http" "settings" .Values.dataplane.probes.readiness "root" $)
HTTPS when tls.enabled: the kubelet does not verify the certificate. */}}
{{- define "routeiq.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
  {{- if .root.Values.tls.enabled }}
  scheme: HTTPS
  {{- end }}
{{- toYaml .settings | nindent 0 }}
{{- end -}}

{{/* Validation ------------------------------------------------------------------- */}}

{{- define "routeiq.validate" -}}
{{- $v := .Values -}}
{{- if not (has $v.dataplane.mode (list "attached" "standalone")) -}}
{{- fail "dataplane.mode must be attached or standalone" -}}
{{- end -}}
{{- if and (eq $v.dataplane.mode "standalone") (not $v.config) -}}
{{- fail "dataplane.mode standalone serves from `config`: give one" -}}
{{- end -}}
{{- if and $v.admin.enabled (not $v.controlplane.enabled) -}}
{{- fail "admin.enabled needs controlplane.enabled: the admin API calls the control plane" -}}
{{- end -}}
{{- if and $v.nats.enabled (eq $v.nats.auth.type "creds") -}}
{{- fail "nats.auth.type creds is for an external NATS; the bundled server takes token or userPassword" -}}
{{- end -}}
{{- if and $v.nats.enabled $v.nats.url -}}
{{- fail "set either nats.enabled (bundled) or nats.url (external), not both" -}}
{{- end -}}
{{- include "routeiq.validateTls" . -}}
{{- end -}}

{{- define "routeiq.validateTls" -}}
{{- $v := .Values -}}
{{- $tls := $v.tls -}}
{{- if dig "tls" "caSecret" "" $v.nats -}}
{{- fail "nats.tls.caSecret moved to tls.nats: set tls.nats.enabled true and tls.nats.caSecret" -}}
{{- end -}}
{{- if $tls.enabled -}}
{{- $components := list "dataplane" -}}
{{- if $v.controlplane.enabled }}{{ $components = append $components "controlplane" }}{{ end -}}
{{- if $v.admin.enabled }}{{ $components = append $components "admin" }}{{ end -}}
{{- range $components -}}
{{- if not (index $tls . "existingSecret") -}}
{{- fail (printf "tls.enabled needs tls.%s.existingSecret: a kubernetes.io/tls Secret (tls.crt, tls.key) whose certificate names the Service %s" . (include "routeiq.componentName" (dict "root" $ "component" .))) -}}
{{- end -}}
{{- end -}}
{{- if and $v.admin.enabled (not $tls.caSecret) -}}
{{- fail "tls.enabled with admin.enabled needs tls.caSecret: a Secret with ca.crt, the CA the admin API verifies the control plane's certificate with" -}}
{{- end -}}
{{- if and $v.serviceMonitor.enabled (not $tls.caSecret) -}}
{{- fail "tls.enabled with serviceMonitor.enabled needs tls.caSecret: a Secret with ca.crt, the CA Prometheus verifies the planes' certificates with" -}}
{{- end -}}
{{- end -}}
{{- if $tls.mtls -}}
{{- if not $tls.enabled -}}
{{- fail "tls.mtls needs tls.enabled: mutual TLS is on top of the control plane's TLS" -}}
{{- end -}}
{{- if not $v.controlplane.enabled -}}
{{- fail "tls.mtls makes the control plane's gRPC require client certificates: it needs controlplane.enabled" -}}
{{- end -}}
{{- if not $tls.caSecret -}}
{{- fail "tls.mtls needs tls.caSecret: a Secret with ca.crt, the CA whose client certificates the control plane accepts" -}}
{{- end -}}
{{- if and $v.admin.enabled (not $tls.adminClient.existingSecret) -}}
{{- fail "tls.mtls needs tls.adminClient.existingSecret: the client certificate (a kubernetes.io/tls Secret) the admin API presents to the control plane" -}}
{{- end -}}
{{- end -}}
{{- if $tls.nats.enabled -}}
{{- if $v.nats.enabled -}}
{{- if not $tls.nats.server.existingSecret -}}
{{- fail (printf "tls.nats.enabled with the bundled NATS needs tls.nats.server.existingSecret: the server's certificate (a kubernetes.io/tls Secret) naming %s" (include "routeiq.componentName" (dict "root" . "component" "nats"))) -}}
{{- end -}}
{{- if not $tls.nats.caSecret -}}
{{- fail "tls.nats.enabled with the bundled NATS needs tls.nats.caSecret: a Secret with ca.crt, the CA the planes verify the server with (and, with tls.nats.server.verify, the server verifies their certificates with)" -}}
{{- end -}}
{{- if and $tls.nats.server.verify (not $tls.nats.clientSecret) -}}
{{- fail "tls.nats.server.verify makes the bundled NATS require client certificates: set tls.nats.clientSecret, the certificate the planes present" -}}
{{- end -}}
{{- else -}}
{{- if $tls.nats.server.existingSecret -}}
{{- fail "tls.nats.server configures the bundled NATS (nats.enabled); an external server has its own certificate: give its CA in tls.nats.caSecret" -}}
{{- end -}}
{{- if not (or $tls.nats.caSecret $tls.nats.clientSecret) -}}
{{- fail "tls.nats.enabled needs tls.nats.caSecret (the CA of the server's certificate) or tls.nats.clientSecret; for a publicly trusted server a tls:// nats.url is enough" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
