//! Every instruction set this CPU supports, forced, through the conformance properties:
//! the default backends run the best one (the whole suite in `conformance.rs`); here each
//! lower one runs too (AVX2 and baseline on an AVX-512 machine), for the serial loop, the
//! parallel backend on one thread (in-register kernels) and Algorithm 1 on every problem,
//! with and without streaming stores.
//! Asking for an instruction set the CPU lacks is an error, not a crash.

use ndarray::Array2;
use scan_core::conformance::{self as c};
use scan_core::{Direction, ForwardInputs, LinearScan, ScanError};
use scan_cpu::{InstructionSet, Parallel, Parallelism, Serial, Tuning};

fn backends(isa: InstructionSet) -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(Serial {
            parallelism: Parallelism::None,
            isa: Some(isa),
        }),
        Box::new(Parallel {
            parallelism: Parallelism::None,
            tuning: Tuning::default(),
            isa: Some(isa),
        }),
        Box::new(Parallel {
            parallelism: Parallelism::Rayon,
            tuning: Tuning {
                min_parallel_elements: 8,
                tile_input_bytes: 5600,
                min_time_split_threads: 2,
                ..Tuning::default()
            },
            isa: Some(isa),
        }),
        Box::new(Parallel {
            parallelism: Parallelism::Rayon,
            tuning: Tuning {
                min_parallel_elements: 8,
                tile_input_bytes: 5600,
                min_time_split_threads: 2,
                stream_min_bytes: 0,
            },
            isa: Some(isa),
        }),
    ]
}

/// A backend for both element types.
trait Backend: LinearScan<f32> + LinearScan<f64> {}
impl<B: LinearScan<f32> + LinearScan<f64>> Backend for B {}

#[test]
fn every_supported_instruction_set_passes_the_conformance_properties() {
    let supported = InstructionSet::supported();
    assert!(supported.contains(&InstructionSet::Baseline));
    assert_eq!(supported.last(), Some(&InstructionSet::detected()));
    for isa in supported {
        for backend in backends(isa) {
            let b32: &dyn LinearScan<f32> = &*backend;
            let b64: &dyn LinearScan<f64> = &*backend;
            let name = format!("{} {}", b32.name(), isa.name());
            c::property::<f32, _>(&name, b32, c::check_forward::<f32, _>);
            c::property::<f64, _>(&name, b64, c::check_backward::<f64, _>);
            c::property::<f32, _>(&name, b32, c::check_backward::<f32, _>);
            c::property::<f64, _>(&name, b64, c::check_forward::<f64, _>);
            c::property::<f32, _>(&name, b32, c::check_ieee_forward::<f32, _>);
            c::property::<f64, _>(&name, b64, c::check_ieee_backward::<f64, _>);
            c::check_ieee_cases::<f32, _>(b32);
            c::check_ieee_cases::<f64, _>(b64);
        }
    }
}

#[test]
fn an_unsupported_instruction_set_is_an_error() {
    let decay = Array2::<f32>::zeros((4, 2));
    for isa in InstructionSet::ALL {
        let result = Parallel {
            isa: Some(isa),
            ..Parallel::default()
        }
        .forward(ForwardInputs {
            decay: decay.view(),
            impulse: decay.view(),
            initial: None,
            direction: Direction::Forward,
        });
        match (isa.is_supported(), result) {
            (true, Ok(_)) => {}
            (false, Err(ScanError::Unavailable { reason, .. })) => {
                assert!(reason.contains(isa.name()), "{reason}")
            }
            (supported, other) => panic!("{isa:?} (supported: {supported}): {other:?}"),
        }
    }
}

#[test]
fn names_parse_back() {
    for isa in InstructionSet::ALL {
        assert_eq!(isa.name().parse::<InstructionSet>(), Ok(isa));
    }
    assert!("sse9".parse::<InstructionSet>().is_err());
}
