{{/* Labels every object carries (the same as deploy/base, plus Helm's). */}}
{{- define "sidekey.labels" -}}
app.kubernetes.io/name: sidekey-injector
{{ include "sidekey.partOfLabels" . }}
{{- end -}}

{{/* Labels of the objects that belong to no one component (the CA, its issuers). */}}
{{- define "sidekey.partOfLabels" -}}
app.kubernetes.io/part-of: sidekey
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}

{{/* image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "sidekey.image" -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end -}}

{{/* The injector's configuration file. */}}
{{- define "sidekey.config" -}}
{{- $excluded := concat .Values.config.excludedNamespaces (list .Release.Namespace) | uniq -}}
prefix: {{ .Values.config.prefix | quote }}
store: {{ .Values.config.store | quote }}
kmsKey: {{ .Values.config.kmsKey | quote }}
agentImage: {{ include "sidekey.image" .Values.agent.image | quote }}
imagePullPolicy: {{ .Values.agent.image.pullPolicy }}
timeout: {{ .Values.config.timeout | quote }}
excludedNamespaces: {{ toJson $excluded }}
environments: {{ toJson .Values.config.environments }}
resources: {{ toJson .Values.agent.resources }}
filesSizeLimit: {{ .Values.config.filesSizeLimit | quote }}
defaults: {{ toJson .Values.config.defaults }}
{{- end -}}

{{/* The host of webhook.url (empty when the Service is called). */}}
{{- define "sidekey.urlHost" -}}
{{- if .Values.webhook.url -}}
{{ (urlParse .Values.webhook.url).hostname }}
{{- end -}}
{{- end -}}

{{/* Whether the injector calls the Kubernetes API (its token is mounted). */}}
{{- define "sidekey.apiAccess" -}}
{{- if or (eq .Values.tls.mode "selfManaged") .Values.registryLookup.pullSecrets -}}
true
{{- end -}}
{{- end -}}
