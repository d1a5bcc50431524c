//! Kernel object names every mode can derive from a Service port's readable name: a short stable
//! hash first (so truncated names stay unique and similar names are easy to tell apart), then as
//! much of the readable name as fits the kernel's limit (nftables 256, iptables chains 28, IPVS
//! none). Modes choose their prefixes and limits; the hashing is shared.

/// `name` prefixed with 8 characters of a hash of itself, truncated to `max` bytes (ending in
/// `...` when cut). Names are ASCII (validated Kubernetes names), so any byte index is a char
/// boundary.
pub fn hash_and_truncate(name: &str, max: usize) -> String {
    let mut out = format!("{}-{name}", hash8(name));
    if out.len() > max {
        out.truncate(max.saturating_sub(3));
        out.push_str("...");
    }
    out
}

/// 8 base32 characters of a stable hash of `name`.
pub fn hash8(name: &str) -> String {
    base32_8(fnv1a64(name.as_bytes()))
}

/// FNV-1a: stable across Rust versions and platforms (unlike `DefaultHasher`), which matters
/// because names must survive a restart or an upgrade of kproxy.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The top 40 bits of `h` as 8 base32 characters (RFC 4648 alphabet, upper case).
fn base32_8(h: u64) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..8)
        .map(|i| ALPHABET[((h >> (59 - 5 * i)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_hashed_and_cut_to_the_limit() {
        // The exact values are pinned by the nftables golden files (names survive restarts).
        assert_eq!(hash8("ns1/svc1/tcp/p80"), hash8("ns1/svc1/tcp/p80"));
        assert_ne!(hash8("ns1/svc1/tcp/p80"), hash8("ns1/svc1/udp/p80"));
        let short = hash_and_truncate("a/b", 100);
        assert_eq!(short, format!("{}-a/b", hash8("a/b")));
        let long = hash_and_truncate(&"x".repeat(300), 28);
        assert_eq!(long.len(), 28);
        assert!(long.ends_with("..."));
    }
}
