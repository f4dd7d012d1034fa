//! The scalar types the kernels run in: f32 for training, f64 for gradient checks.

use num_traits::Float;

pub trait Real: Float + Send + Sync + std::fmt::Debug + std::iter::Sum + 'static {
    fn of(x: f64) -> Self;
}

impl Real for f32 {
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
}

#[inline(always)]
pub fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}
