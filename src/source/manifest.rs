//! The "no cluster" source: a directory or file of YAML/JSON manifests.
