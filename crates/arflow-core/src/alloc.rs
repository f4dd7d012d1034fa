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
///
/// At most [`SizedPool::CLASSES`] lengths are kept, the least recently used dropped first: a caller
/// that cycles through ever new lengths (scoring data sets of many sizes) does not grow it without end.
#[derive(Default)]
pub struct SizedPool(std::sync::Mutex<Vec<(usize, Vec<Vec<f32>>)>>);

impl SizedPool {
    /// Lengths kept at most (a Real NVP or Glow step uses about a dozen).
    pub const CLASSES: usize = 32;

    /// An empty pool (usable in a `static`).
    pub const fn new() -> Self {
        SizedPool(std::sync::Mutex::new(Vec::new()))
    }

    /// The kept buffers of length `len`, made the most recently used (last), created when missing;
    /// the least recently used length goes when there are too many.
    fn class(sizes: &mut Vec<(usize, Vec<Vec<f32>>)>, len: usize) -> &mut Vec<Vec<f32>> {
        match sizes.iter().position(|(l, _)| *l == len) {
            Some(i) => {
                let c = sizes.remove(i);
                sizes.push(c);
            }
            None => {
                if sizes.len() >= Self::CLASSES {
                    sizes.remove(0);
                }
                sizes.push((len, Vec::new()));
            }
        }
        &mut sizes.last_mut().expect("just pushed").1
    }

    /// An empty buffer with room for `len` values (a kept one given back at that length, else a new one),
    /// for a writer that fills it through its spare capacity.
    pub fn take_empty(&self, len: usize) -> Vec<f32> {
        let kept = {
            let mut sizes = self.0.lock().unwrap_or_else(|e| e.into_inner());
            Self::class(&mut sizes, len).pop()
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
        Self::class(&mut sizes, v.len()).push(v);
    }

    /// How many buffers are kept, over all lengths.
    pub fn kept(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, b)| b.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::{BufferPool, SizedPool};

    #[test]
    fn a_sized_pool_reuses_by_length_and_forgets_the_least_recent_lengths() {
        let pool = SizedPool::new();
        // Kept buffers are told apart by their capacity, which a fresh one of the same length lacks.
        let marked = |len: usize| {
            let mut v = Vec::with_capacity(4096);
            v.resize(len, 1.0f32);
            v
        };
        pool.give(marked(100));
        // Another length never gets it; the same length does, emptied.
        assert!(pool.take_empty(50).capacity() < 4096);
        let c = pool.take_empty(100);
        assert!(c.capacity() == 4096 && c.is_empty());
        pool.give(marked(100));
        // Give back more lengths than the pool keeps: the least recently used (100) goes, the rest stay.
        for len in 1..=SizedPool::CLASSES {
            pool.give(marked(1000 + len));
        }
        assert_eq!(pool.kept(), SizedPool::CLASSES);
        assert!(pool.take_empty(100).capacity() < 4096);
        // Asking for 100 again made it a length of the pool's once more, and 1001 (now the least recent)
        // went; the others are still there.
        assert_eq!(pool.take_empty(1000 + SizedPool::CLASSES).capacity(), 4096);
        assert_eq!(pool.take_empty(1002).capacity(), 4096);
        assert!(pool.take_empty(1001).capacity() < 4096);
    }

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
