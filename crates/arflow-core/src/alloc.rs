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

/// Large f32 buffers kept for reuse from one call to the next, whichever thread makes the call. A
/// training step needs the same multi-megabyte buffers every time; freed to the allocator instead,
/// they stay cached with the thread that freed them (mimalloc under Node's worker pool keeps them
/// committed, one set per worker thread that ran a step), so resident memory grew past what any one
/// step holds.
#[derive(Default)]
pub struct BufferPool(std::sync::Mutex<Vec<Vec<f32>>>);

impl BufferPool {
    /// `len` zeros in the smallest kept buffer that holds them, else in a new one; a miss frees the
    /// largest kept buffer (too small for this size), so a pool whose sizes grow holds no leftovers.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fit = (0..kept.len()).filter(|&i| kept[i].capacity() >= len).min_by_key(|&i| kept[i].capacity());
        let mut v = match fit {
            Some(i) => kept.swap_remove(i),
            None => {
                if let Some(i) = (0..kept.len()).max_by_key(|&i| kept[i].capacity()) {
                    kept.swap_remove(i);
                }
                Vec::new()
            }
        };
        drop(kept);
        v.clear();
        v.resize(len, 0.0);
        v
    }

    /// Keeps `v` for a later [`BufferPool::take`].
    pub fn give(&self, v: Vec<f32>) {
        if v.capacity() > 0 {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(v);
        }
    }
}

/// Large f32 buffers kept for reuse by exact length: for a pass that needs a handful of sizes over and
/// over, several buffers of each at once (the fused ResNet conditioner of the image flows). A best-fit
/// [`BufferPool`] serves a small request from a large buffer there, and then misses on the large
/// request and allocates afresh, page faults and all, every step.
#[derive(Default)]
pub struct SizedPool(std::sync::Mutex<Vec<(usize, Vec<Vec<f32>>)>>);

impl SizedPool {
    /// An empty pool (usable in a `static`).
    pub const fn new() -> Self {
        SizedPool(std::sync::Mutex::new(Vec::new()))
    }

    /// An empty buffer with room for `len` values (a kept one given back at that length, else a new one),
    /// for a writer that fills it through its spare capacity.
    pub fn take_empty(&self, len: usize) -> Vec<f32> {
        let kept = {
            let mut sizes = self.0.lock().unwrap_or_else(|e| e.into_inner());
            sizes.iter_mut().find(|(l, _)| *l == len).and_then(|(_, bufs)| bufs.pop())
        };
        let mut v = kept.unwrap_or_default();
        v.clear();
        v.reserve(len);
        v
    }

    /// Keeps `v` for a later [`SizedPool::take_empty`] of its current length.
    pub fn give(&self, v: Vec<f32>) {
        if v.capacity() == 0 {
            return;
        }
        let mut sizes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match sizes.iter_mut().find(|(l, _)| *l == v.len()) {
            Some((_, bufs)) => bufs.push(v),
            None => sizes.push((v.len(), vec![v])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BufferPool;

    #[test]
    fn a_pool_reuses_the_best_fit_and_drops_what_no_longer_fits() {
        let pool = BufferPool::default();
        let (a, b) = (pool.take(100), pool.take(1000));
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        pool.give(a);
        pool.give(b);
        // The smallest buffer that fits, zero-filled.
        let mut c = pool.take(50);
        assert_eq!((c.as_ptr(), c.len()), (pa, 50));
        c.fill(7.0);
        pool.give(c);
        let c = pool.take(80);
        assert!(c.as_ptr() == pa && c.iter().all(|&v| v == 0.0));
        let d = pool.take(900);
        assert_eq!(d.as_ptr(), pb);
        pool.give(c);
        pool.give(d);
        // A size nothing holds: a new buffer, and the largest kept one is freed.
        let e = pool.take(5000);
        assert_eq!(e.len(), 5000);
        assert_eq!(pool.0.lock().unwrap().len(), 1);
    }
}
