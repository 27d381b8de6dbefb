//! Helpers shared by the integration tests.

use synod_wal::testing::FaultyStorage;
use synod_wal::{SyncPolicy, Wal, WalConfig};

/// A small-segment configuration for simulated disks.
pub fn small_config(policy: SyncPolicy) -> WalConfig {
    WalConfig::builder()
        .segment_bytes_max(4096)
        .record_bytes_max(1024)
        .sync_policy(policy)
        .build()
        .expect("valid config")
}

/// A payload that tells its index apart from any other.
pub fn payload(index: u64, len: usize) -> Vec<u8> {
    let mut p = format!("record {index}:").into_bytes();
    while p.len() < len {
        p.push(b'a' + (index.wrapping_mul(31).wrapping_add(p.len() as u64) % 26) as u8);
    }
    p.truncate(len.max(1));
    p
}

/// Every record of the log, read back in order.
pub fn contents(wal: &Wal<FaultyStorage>) -> Vec<(u64, Vec<u8>)> {
    wal.range(wal.first_index(), wal.next_index())
        .map(|r| {
            let (i, b) = r.expect("readable");
            (i.get(), b.to_vec())
        })
        .collect()
}

/// An environment variable as a number, or the default.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
