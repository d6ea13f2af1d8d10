{{/*
Names. Namespaced objects are named "<fullname>-<component>"; cluster-scoped ones also carry
the release namespace so that two releases of the same name in different namespaces never
collide (Istio does the same for its webhook and ClusterRoles).
*/}}
{{- define "remora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "remora.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "remora.discovery.name" -}}
{{- printf "%s-discovery" (include "remora.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "remora.injector.name" -}}
{{- printf "%s-injector" (include "remora.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The revision as Istio writes it in labels: "default" for the default revision. */}}
{{- define "remora.revisionName" -}}
{{- default "default" .Values.revision }}
{{- end }}

{{- define "remora.revisionSuffix" -}}
{{- if .Values.revision }}-{{ .Values.revision }}{{ end }}
{{- end }}

{{/* Cluster-scoped names: unique per release namespace. */}}
{{- define "remora.clusterName" -}}
{{- printf "%s-%s-%s" (include "remora.fullname" .root) .component .root.Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "remora.webhookConfigurationName" -}}
{{- include "remora.clusterName" (dict "root" . "component" "sidecar-injector") }}
{{- end }}

{{- define "remora.injector.tlsSecretName" -}}
{{- if eq .Values.injector.certificates.mode "secret" }}
{{- required "injector.certificates.secret.name is required when injector.certificates.mode is secret" .Values.injector.certificates.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "remora.injector.name" .) }}
{{- end }}
{{- end }}

{{/* The Istio-named ConfigMaps that Istio tooling and Remora read. */}}
{{- define "remora.meshConfigMapName" -}}
istio{{ include "remora.revisionSuffix" . }}
{{- end }}

{{- define "remora.injectorConfigMapName" -}}
istio-sidecar-injector{{ include "remora.revisionSuffix" . }}
{{- end }}

{{- define "remora.discovery.serviceAccountName" -}}
{{- if .Values.controlPlane.serviceAccount.create }}
{{- default (include "remora.discovery.name" .) .Values.controlPlane.serviceAccount.name }}
{{- else }}
{{- required "controlPlane.serviceAccount.name is required when controlPlane.serviceAccount.create is false" .Values.controlPlane.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "remora.injector.serviceAccountName" -}}
{{- if .Values.injector.serviceAccount.create }}
{{- default (include "remora.injector.name" .) .Values.injector.serviceAccount.name }}
{{- else }}
{{- required "injector.serviceAccount.name is required when injector.serviceAccount.create is false" .Values.injector.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels, per Helm's and Kubernetes' conventions. */}}
{{- define "remora.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "remora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: remora
istio.io/rev: {{ include "remora.revisionName" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "remora.componentLabels" -}}
{{ include "remora.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels: immutable, so only the identity of the component. */}}
{{- define "remora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "remora.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "remora.image" -}}
{{- printf "%s/%s:%s" .Values.image.hub .Values.image.name (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The control plane Service's in-cluster address, for sidecars. */}}
{{- define "remora.discoveryAddress" -}}
{{- $port := ternary .Values.controlPlane.ports.secureXds .Values.controlPlane.ports.xds .Values.controlPlane.tls.enabled }}
{{- printf "%s.%s.svc:%v" (include "remora.discovery.name" .) .Release.Namespace $port }}
{{- end }}

{{/* Namespaces the webhook never sees: the mesh's own, the system ones, and the user's. */}}
{{- define "remora.excludedNamespaces" -}}
{{- $ns := list .Release.Namespace "kube-system" "kube-public" "kube-node-lease" "local-path-storage" }}
{{- range .Values.injector.excludedNamespaces }}{{ $ns = append $ns . }}{{ end }}
{{- toJson ($ns | uniq) }}
{{- end }}

{{/* The MeshConfig: chart defaults, then the user's meshConfig on top. */}}
{{- define "remora.meshConfig" -}}
{{- $defaults := dict
      "trustDomain" "cluster.local"
      "rootNamespace" .Release.Namespace
      "defaultConfig" (dict "discoveryAddress" (include "remora.discoveryAddress" .)) }}
{{- toYaml (mustMergeOverwrite $defaults (deepCopy .Values.meshConfig)) }}
{{- end }}
