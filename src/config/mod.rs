//! KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1): parsing, upstream's defaults,
//! validation, and how command-line flags combine with the file.
