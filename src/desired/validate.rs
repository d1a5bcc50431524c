//! The API server's validation of the object text a mode could write (names, namespaces, port
//! names), applied where objects are converted. kproxy also reads objects the API server never
//! saw (manifest files), and a mode writes these names into kernel programs (nft chain names are
//! built from them), so nothing that the API server would refuse may pass.
//!
//! Each check returns `Err(reason)`, a short text that names the field and shows the value
//! escaped and shortened (see [`shown`]); callers skip the object or endpoint with it.

use std::net::IpAddr;

use kproxy_modes::model::IpFamily;

/// Longest text shown of an invalid value in a reason or a skip record: enough to recognise it,
/// and a bound on what a hostile object can make kproxy keep and print.
const SHOWN_MAX: usize = 64;

/// `value` for a log line, `debug dump` or a skip record: control characters, quotes and
/// backslashes escaped (so it cannot forge a line or a terminal sequence), shortened.
pub fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(SHOWN_MAX)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > SHOWN_MAX {
        out.push_str("...");
    }
    out
}

/// A DNS-1123 label (RFC 1123): at most 63 of `[a-z0-9-]`, starting and ending alphanumeric.
/// Namespaces, Service names and port names are labels.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 subdomain: at most 253 characters of dot-separated labels (EndpointSlice names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// `metadata.namespace` (already defaulted) and `metadata.name` of a Service.
pub fn service_meta(namespace: &str, name: &str) -> Result<(), String> {
    label("metadata.namespace", namespace)?;
    label("metadata.name", name)
}

/// `metadata.namespace`, `metadata.name` and the Service it names, of an EndpointSlice.
pub fn slice_meta(namespace: &str, name: &str, service: &str) -> Result<(), String> {
    label("metadata.namespace", namespace)?;
    if !is_dns1123_subdomain(name) {
        return Err(format!(
            "invalid metadata.name \"{}\": not a DNS-1123 subdomain",
            shown(name)
        ));
    }
    label(&format!("label {}", super::SERVICE_NAME_LABEL), service)
}

/// A port name of a Service or an EndpointSlice: empty (the API allows it for a single port) or
/// a DNS-1123 label, as the API server validates both.
pub fn port_name(field: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Ok(());
    }
    label(field, name)
}

/// The address of a slice endpoint: its first (upstream uses only the first), which must be an
/// IP of the slice's family.
pub fn endpoint_address(
    i: usize,
    addresses: &[String],
    family: IpFamily,
) -> Result<IpAddr, String> {
    let first = addresses
        .first()
        .ok_or_else(|| format!("endpoints[{i}]: no addresses"))?;
    let ip: IpAddr = first
        .parse()
        .map_err(|_| format!("endpoints[{i}]: address \"{}\" is not an IP", shown(first)))?;
    if IpFamily::of(&ip) != family {
        return Err(format!(
            "endpoints[{i}]: {} address {ip} in an {family} slice",
            IpFamily::of(&ip)
        ));
    }
    Ok(ip)
}

fn label(field: &str, value: &str) -> Result<(), String> {
    if is_dns1123_label(value) {
        return Ok(());
    }
    Err(format!(
        "invalid {field} \"{}\": not a DNS-1123 label",
        shown(value)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains_follow_rfc_1123() {
        for ok in ["a", "web", "kube-system", "0abc", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", "a b", "a\nb", "é", &long] {
            assert!(!is_dns1123_label(bad), "{bad:?}");
        }
        assert!(is_dns1123_subdomain("web-abc12.v1"));
        for bad in ["", ".a", "a.", "a..b", "A.b"] {
            assert!(!is_dns1123_subdomain(bad), "{bad:?}");
        }
    }

    /// A reason shows the value so that it cannot break a line, a quote or a terminal.
    #[test]
    fn shown_values_are_escaped_and_bounded() {
        let evil = "evil\" } ; add table ip pwned ; #";
        let reason = service_meta("ns", evil).unwrap_err();
        assert_eq!(
            reason,
            r#"invalid metadata.name "evil\" } ; add table ip pwned ; #": not a DNS-1123 label"#
        );
        assert_eq!(shown("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(shown(&"x".repeat(100)).len(), SHOWN_MAX + 3);
        assert!(port_name("spec.ports[0].name", "").is_ok());
        assert!(port_name("spec.ports[0].name", "http\n").is_err());
    }
}
