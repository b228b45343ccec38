//! The compute-backend conformance suite (`surrogate_rnn::backend::conformance`) on the CPU
//! backend, in `f64` (tolerance 1e-10 of each result's magnitude) and `f32` (1e-4; the
//! reference computes in f64), over random shapes: T = 1 and odd sizes, B ≥ 1, n ≥ 1,
//! inner sizes including 0.

use proptest::prelude::*;
use scan_cpu::{Parallel, Serial};
use surrogate_rnn::backend::conformance::{check_backend, Case};
use surrogate_rnn::CpuBackend;

fn cases() -> impl Strategy<Value = Case> {
    (
        1_usize..=13,
        1_usize..=4,
        1_usize..=9,
        0_usize..=7,
        any::<u64>(),
    )
        .prop_map(|(n_steps, n_batch, n_features, n_inner, seed)| Case {
            n_steps,
            n_batch,
            n_features,
            n_inner,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn cpu_backend_conforms_in_f64(case in cases()) {
        let scan = Serial::default();
        let result = check_backend::<f64, _>(&CpuBackend::new(&scan), &case, 1e-10);
        prop_assert!(result.is_ok(), "{case:?}: {result:?}");
    }

    #[test]
    fn cpu_backend_conforms_in_f32(case in cases()) {
        let scan = Parallel::default();
        let result = check_backend::<f32, _>(&CpuBackend::new(&scan), &case, 1e-4);
        prop_assert!(result.is_ok(), "{case:?}: {result:?}");
    }
}
