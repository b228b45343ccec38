//! What the operating system tells about memory (Linux `/proc`; `None` elsewhere).

/// The peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_field("/proc/self/status", "VmHWM:")
}

/// The memory available to new allocations without swapping (`MemAvailable`), in bytes.
pub fn available_memory_bytes() -> Option<u64> {
    proc_field("/proc/meminfo", "MemAvailable:")
}

/// Reads a `Name:   1234 kB` line.
fn proc_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `bytes` as a short human-readable size.
pub fn format_bytes(bytes: f64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if bytes >= GIB {
        format!("{:.2} GiB", bytes / GIB)
    } else {
        format!("{:.1} MiB", bytes / MIB)
    }
}
