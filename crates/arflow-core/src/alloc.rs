//! Allocator tuning. Training allocates and frees the same multi-megabyte tensors every step; glibc
//! serves blocks above its mmap threshold with fresh `mmap`s and trims freed heap top eagerly, so every
//! step pays page faults and page clearing for memory it just returned (a quarter of a conv flow's
//! step time in `perf`). Raising both thresholds keeps that memory in the process for reuse. (The
//! Node addon goes further and allocates through mimalloc; this helps the crate's own tests and
//! examples, and any other host.)

/// Raises glibc's mmap and trim thresholds, once per process; a no-op elsewhere.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
            unsafe {
                // 32 MiB is glibc's largest mmap threshold on 64-bit; trim only above 1 GiB of free top.
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        });
    }
}
