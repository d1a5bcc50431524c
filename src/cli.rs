//! The command line (clap), with upstream kube-proxy's flag names.
