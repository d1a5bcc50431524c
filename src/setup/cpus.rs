//! How many CPUs the node has, for `conntrack.maxPerCore`.
//!
//! Upstream counts the machine's CPUs from `/sys` rather than the ones the process may run on
//! (kubernetes#99225: a kube-proxy pinned to a few CPUs sized the table for those few). So
//! kproxy reads the online list too, not `available_parallelism`, which follows affinity and
//! cgroup quotas; that is only the fallback when `/sys` cannot be read.

const ONLINE: &str = "/sys/devices/system/cpu/online";

/// The number of online CPUs on the node, at least 1.
pub fn node_cpus() -> usize {
    std::fs::read_to_string(ONLINE)
        .ok()
        .and_then(|text| parse_cpu_list(&text))
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

/// Counts the CPUs in a kernel CPU list such as `0-3,6,8-9` (`None` if it is malformed).
pub fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut count = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let n = part.parse::<usize>().ok()?;
                (n, n)
            }
        };
        count += last.checked_sub(first)? + 1;
    }
    Some(count)
}
