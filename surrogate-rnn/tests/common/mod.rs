//! Helpers shared by the integration tests (each test binary uses some of them).
#![allow(dead_code)]

use proptest::prelude::*;
use surrogate_rnn::{LayerKind, Parameters};

/// Every parameter gradient of `model`, flattened in visiting order.
pub fn grads<P: Parameters<f64>>(model: &P) -> Vec<f64> {
    let mut out = Vec::new();
    model.visit_params(&mut |_, _, g| out.extend(g.iter().copied()));
    out
}

/// Every recurrent layer kind, QRNN with filter widths 1 to 4.
pub fn layer_kinds() -> impl Strategy<Value = LayerKind> {
    prop_oneof![
        Just(LayerKind::Gilr),
        Just(LayerKind::GilrLstm),
        Just(LayerKind::GilrLstmTanh),
        (1_usize..=4).prop_map(|width| LayerKind::Qrnn { width }),
        Just(LayerKind::Sru),
        Just(LayerKind::Lstm),
    ]
}
