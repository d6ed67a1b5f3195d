{{- define "qm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "qm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "qm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "qm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "qm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "qm.mirrorSelectorLabels" -}}
{{ include "qm.selectorLabels" . }}
app.kubernetes.io/component: mirror
{{- end -}}

{{- define "qm.redisSelectorLabels" -}}
{{ include "qm.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "qm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret the MIRROR_* credentials come from: the user's, or the chart's. */}}
{{- define "qm.secretName" -}}
{{- default (printf "%s-secret" (include "qm.fullname" .)) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "qm.redisName" -}}
{{- printf "%s-redis" (include "qm.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "true" when the state lives in Redis (in-chart, external, or in the existing secret). */}}
{{- define "qm.sharedState" -}}
{{- if or .Values.redis.enabled .Values.externalRedis.url .Values.secret.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* The configured upstream URLs: each ecosystem's upstream when set. */}}
{{- define "qm.upstreamUrls" -}}
{{- $urls := list -}}
{{- range $eco := list "npm" "pypi" "maven" -}}
{{- $u := (index $.Values.config $eco).upstream -}}
{{- if $u -}}{{- $urls = append $urls $u -}}{{- end -}}
{{- end -}}
{{- toJson $urls -}}
{{- end -}}

{{/* Every host the mirror may fetch from: the upstreams' hosts and their fileHosts. */}}
{{- define "qm.upstreamHosts" -}}
{{- $hosts := list -}}
{{- range $u := (include "qm.upstreamUrls" . | fromJsonArray) -}}
{{- $hosts = append $hosts (urlParse $u).hostname -}}
{{- end -}}
{{- range $eco := list "npm" "pypi" "maven" -}}
{{- range $h := (index $.Values.config $eco).fileHosts -}}
{{- $hosts = append $hosts $h -}}
{{- end -}}
{{- end -}}
{{- toJson ($hosts | uniq) -}}
{{- end -}}

{{/* The TCP ports of the upstreams: 443 for https, 80 for http, or the URL's own port. */}}
{{- define "qm.upstreamPorts" -}}
{{- $ports := list -}}
{{- range $u := (include "qm.upstreamUrls" . | fromJsonArray) -}}
{{- $p := urlParse $u -}}
{{- $hostport := splitList ":" $p.host -}}
{{- if gt (len $hostport) 1 -}}
{{- $ports = append $ports (last $hostport | atoi) -}}
{{- else if eq $p.scheme "http" -}}
{{- $ports = append $ports 80 -}}
{{- else -}}
{{- $ports = append $ports 443 -}}
{{- end -}}
{{- end -}}
{{- /* file hosts are reached over https */ -}}
{{- $ports = append $ports 443 -}}
{{- toJson ($ports | uniq) -}}
{{- end -}}

{{/* A TOML string: JSON's string escapes are valid TOML basic-string escapes. */}}
{{- define "qm.tomlString" -}}
{{- toJson (toString .) -}}
{{- end -}}

{{- define "qm.tomlStringList" -}}
[{{- range $i, $v := . -}}{{- if $i }}, {{ end -}}{{ include "qm.tomlString" $v }}{{- end -}}]
{{- end -}}

{{/* mirror.toml, rendered from .Values.config. Directories, listen and workers come from
     the pod's environment; credentials from the Secret. */}}
{{- define "qm.mirrorToml" -}}
{{- $c := .Values.config -}}
# Rendered by the quarantine-mirror Helm chart from its values. Credentials are not here:
# they reach the mirror as MIRROR_* variables from a Secret. The directories, listen and
# workers are set by the pod's environment (MIRROR_DATA_DIR, MIRROR_STATE_DIR, …).
{{- if $c.publicUrl }}
public_url = {{ include "qm.tomlString" $c.publicUrl }}
{{- end }}
trusted_proxies = {{ include "qm.tomlStringList" $c.trustedProxies }}
shutdown_grace = "{{ int .Values.shutdownGraceSeconds }}s"
access_log = {{ $c.accessLog }}
log_level = {{ include "qm.tomlString" $c.logLevel }}

[quarantine]
default = {{ include "qm.tomlString" $c.quarantine.default }}
unknown = {{ include "qm.tomlString" $c.quarantine.unknown }}
{{- range $eco, $age := $c.quarantine.perEcosystem }}

[quarantine.{{ $eco }}]
age = {{ include "qm.tomlString" $age }}
{{- end }}
{{- range $rule := $c.quarantine.rules }}

[[quarantine.rules]]
ecosystem = {{ include "qm.tomlString" $rule.ecosystem }}
package = {{ include "qm.tomlString" $rule.package }}
age = {{ include "qm.tomlString" $rule.age }}
{{- end }}
{{- range $eco := list "npm" "pypi" "maven" }}
{{- $e := index $c $eco }}

[{{ $eco }}]
{{- if $e.upstream }}
upstream = {{ include "qm.tomlString" $e.upstream }}
{{- end }}
file_hosts = {{ include "qm.tomlStringList" $e.fileHosts }}
{{- end }}

[cache]
metadata_ttl = {{ include "qm.tomlString" $c.cache.metadataTtl }}
stale_max = {{ include "qm.tomlString" $c.cache.staleMax }}
max_bytes = {{ include "qm.tomlString" $c.cache.maxBytes }}
memory_budget = {{ include "qm.tomlString" $c.cache.memoryBudget }}

[admin]
protect_reads = {{ $c.admin.protectReads }}
open_impact = {{ $c.admin.openImpact }}
audit_retention = {{ include "qm.tomlString" $c.admin.auditRetention }}
{{- if $c.extraToml }}

{{ $c.extraToml }}
{{- end }}
{{- end -}}
