//! What the machine is: cache sizes (read once per process from Linux sysfs) and the
//! instruction set, for the plan and for benchmark reports.

use std::sync::OnceLock;

use crate::InstructionSet;

/// The data cache sizes of the first CPU, in bytes; `None` where they cannot be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSizes {
    /// Level-1 data cache per core.
    pub l1d: Option<usize>,
    /// Level-2 cache (per core on current x86-64 parts).
    pub l2: Option<usize>,
    /// Level-3 cache (shared; on a VM, the host's whole cache, of which a guest may get a
    /// small share).
    pub l3: Option<usize>,
}

impl CacheSizes {
    /// The sizes of this machine, read once per process.
    pub fn detect() -> Self {
        static SIZES: OnceLock<CacheSizes> = OnceLock::new();
        *SIZES.get_or_init(read_sysfs)
    }

    /// The largest cache present.
    pub fn last_level(&self) -> Option<usize> {
        self.l3.or(self.l2).or(self.l1d)
    }
}

/// A one-line description: instruction set, caches and threads, for benchmark headers.
pub fn describe(isa: InstructionSet, threads: usize) -> String {
    let caches = CacheSizes::detect();
    let kib = |b: Option<usize>| b.map_or("?".to_owned(), |b| format!("{} KiB", b >> 10));
    format!(
        "instruction set: {}; caches: L1d {}, L2 {}, L3 {}; threads: {threads}",
        isa.name(),
        kib(caches.l1d),
        kib(caches.l2),
        kib(caches.l3)
    )
}

fn read_sysfs() -> CacheSizes {
    let mut sizes = CacheSizes::default();
    for index in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let read = |name: &str| std::fs::read_to_string(format!("{dir}/{name}")).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        let Some(size) = parse_cache_size(size.trim()) else {
            continue;
        };
        match (level.trim(), kind.trim()) {
            ("1", "Data") => sizes.l1d = Some(size),
            ("2", "Unified" | "Data") => sizes.l2 = Some(size),
            ("3", "Unified" | "Data") => sizes.l3 = Some(size),
            _ => {}
        }
    }
    sizes
}

/// Parses sysfs cache sizes such as `32768K` or `2M`.
pub(crate) fn parse_cache_size(text: &str) -> Option<usize> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: usize = digits.parse().ok()?;
    match unit {
        "" => Some(value),
        "K" => value.checked_mul(1 << 10),
        "M" => value.checked_mul(1 << 20),
        "G" => value.checked_mul(1 << 30),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("32768K"), Some(32 << 20));
        assert_eq!(parse_cache_size("2M"), Some(2 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("12Q"), None);
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(parse_cache_size("99999999999999999999G"), None);
    }

    #[test]
    fn detected_sizes_are_ordered() {
        let sizes = CacheSizes::detect();
        if let (Some(l1), Some(l2)) = (sizes.l1d, sizes.l2) {
            assert!(l1 <= l2, "{sizes:?}");
        }
        assert!(describe(InstructionSet::detected(), 2).contains("instruction set"));
    }
}
