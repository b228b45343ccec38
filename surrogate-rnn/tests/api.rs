//! The public API does not panic: random configurations (including absurd sizes),
//! inputs of the wrong kind or shape, forward passes handed to another model, caches and
//! states of other layers, zero chunk lengths and bad labels, in random call orders, all
//! end in `Ok` or a `ModelError` — a panic fails the test.

use ndarray::{Array2, Array3};
use proptest::prelude::*;
use scan_core::Reference;
use surrogate_rnn::{
    Adam, AdamConfig, Backprop, Classifier, CpuBackend, ForwardPass, InitConfig, InputKind, Layer,
    LayerKind, LayerState, ModelConfig, ModelInput, OneHotSequence, RecurrentLayer,
};

/// A two-class model of `layers` layers of `layer` with `hidden` units on dense inputs of
/// `size` features, without an input projection.
fn dense_config(layer: LayerKind, size: usize, hidden: usize, layers: usize) -> ModelConfig {
    ModelConfig {
        layer,
        input: InputKind::Dense { size },
        input_projection: None,
        hidden,
        layers,
        classes: 2,
    }
}

fn kinds() -> impl Strategy<Value = LayerKind> {
    prop_oneof![
        Just(LayerKind::Gilr),
        Just(LayerKind::GilrLstm),
        (0_usize..=3).prop_map(|width| LayerKind::Qrnn { width }),
        Just(LayerKind::Sru),
        Just(LayerKind::Lstm),
    ]
}

fn sizes() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0_usize..=4, 1 => Just(usize::MAX / 3), 1 => Just(1_usize << 40)]
}

fn configs() -> impl Strategy<Value = ModelConfig> {
    (
        kinds(),
        any::<bool>(),
        sizes(),
        proptest::option::of(sizes()),
        sizes(),
        0_usize..=3,
        sizes(),
    )
        .prop_map(
            |(layer, one_hot, size, input_projection, hidden, layers, classes)| ModelConfig {
                layer,
                input: if one_hot {
                    InputKind::OneHot { vocab: size }
                } else {
                    InputKind::Dense { size }
                },
                input_projection,
                hidden,
                layers,
                classes,
            },
        )
}

/// One call on the public API.
#[derive(Clone, Debug)]
enum Call {
    Forward {
        model: usize,
        input: usize,
    },
    Backward {
        model: usize,
        pass: usize,
        input: usize,
        grad_rows: usize,
    },
    Logits {
        model: usize,
        input: usize,
    },
    Streaming {
        model: usize,
        input: usize,
        chunk_len: usize,
    },
    Chunked {
        model: usize,
        input: usize,
        chunk_len: usize,
        truncated: bool,
    },
    Train {
        model: usize,
        input: usize,
        label: usize,
    },
    Layer {
        kind: usize,
        other: usize,
        input: usize,
        state: bool,
    },
}

fn calls() -> impl Strategy<Value = Call> {
    prop_oneof![
        (0_usize..3, 0_usize..6).prop_map(|(model, input)| Call::Forward { model, input }),
        (0_usize..3, 0_usize..4, 0_usize..6, 0_usize..4).prop_map(
            |(model, pass, input, grad_rows)| Call::Backward {
                model,
                pass,
                input,
                grad_rows
            }
        ),
        (0_usize..3, 0_usize..6).prop_map(|(model, input)| Call::Logits { model, input }),
        (0_usize..3, 0_usize..6, 0_usize..4).prop_map(|(model, input, chunk_len)| {
            Call::Streaming {
                model,
                input,
                chunk_len,
            }
        }),
        (0_usize..3, 0_usize..6, 0_usize..4, any::<bool>()).prop_map(
            |(model, input, chunk_len, truncated)| {
                Call::Chunked {
                    model,
                    input,
                    chunk_len,
                    truncated,
                }
            }
        ),
        (0_usize..3, 0_usize..6, 0_usize..4).prop_map(|(model, input, label)| Call::Train {
            model,
            input,
            label
        }),
        (0_usize..5, 0_usize..5, 0_usize..6, any::<bool>()).prop_map(
            |(kind, other, input, state)| Call::Layer {
                kind,
                other,
                input,
                state
            }
        ),
    ]
}

const KINDS: [LayerKind; 5] = [
    LayerKind::Gilr,
    LayerKind::GilrLstm,
    LayerKind::Qrnn { width: 3 },
    LayerKind::Sru,
    LayerKind::Lstm,
];

struct Inputs {
    dense: Vec<Array3<f64>>,
    one_hot: Vec<OneHotSequence<f64>>,
}

impl Inputs {
    fn new() -> Self {
        let dense = [(3, 2, 2), (3, 2, 3), (0, 2, 2), (2, 0, 2), (1, 1, 5)]
            .map(|d| Array3::from_shape_fn(d, |(t, b, k)| (t + b + k) as f64 * 0.1 - 0.2))
            .to_vec();
        let one_hot = [(3, 2, 2), (2, 1, 3), (0, 1, 2)]
            .map(|(t, b, vocab)| {
                let index = Array2::from_shape_fn((t, b), |(t, b)| ((t + b) % vocab) as u32);
                OneHotSequence::new(index, Array2::from_elem((t, b), 1.0), vocab).unwrap()
            })
            .to_vec();
        Self { dense, one_hot }
    }

    fn get(&self, k: usize) -> ModelInput<'_, f64> {
        if k.is_multiple_of(2) {
            ModelInput::Dense(self.dense[(k / 2) % self.dense.len()].view())
        } else {
            ModelInput::OneHot(&self.one_hot[(k / 2) % self.one_hot.len()])
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_configurations_are_built_or_refused(config in configs(), seed in any::<u64>()) {
        let _ = Classifier::<f32>::new(config, InitConfig::default(), seed);
        let _ = RecurrentLayer::<f32>::new(config.layer, config.hidden, config.classes, InitConfig::default(), seed);
    }

    #[test]
    fn random_call_orders_return_errors_not_panics(
        kinds in proptest::collection::vec(kinds(), 3),
        calls in proptest::collection::vec(calls(), 1..12),
    ) {
        let inputs = Inputs::new();
        let mut models: Vec<Classifier<f64>> = kinds
            .iter()
            .enumerate()
            .map(|(k, &layer)| {
                let one_hot = k == 1;
                let config = ModelConfig {
                    layer: if layer == (LayerKind::Qrnn { width: 0 }) { LayerKind::Gilr } else { layer },
                    input: if one_hot { InputKind::OneHot { vocab: 2 } } else { InputKind::Dense { size: 2 } },
                    input_projection: Some(2),
                    hidden: 2,
                    layers: k + 1,
                    classes: 2,
                };
                Classifier::new(config, InitConfig::default(), k as u64).unwrap()
            })
            .collect();
        let mut passes: Vec<Option<ForwardPass<f64>>> = Vec::new();
        let scan = Reference;
        for call in calls {
            match call {
                Call::Forward { model, input } => {
                    passes.push(models[model].forward(&scan, inputs.get(input)).ok());
                }
                Call::Backward { model, pass, input, grad_rows } => {
                    if let Some(Some(pass)) = passes.get_mut(pass).map(Option::take) {
                        let grad = Array2::zeros((grad_rows, 2));
                        let _ = models[model].backward(&scan, inputs.get(input), pass, grad.view());
                    }
                }
                Call::Logits { model, input } => {
                    let _ = models[model].logits(&scan, inputs.get(input));
                }
                Call::Streaming { model, input, chunk_len } => {
                    let _ = models[model].evaluate_streaming(&scan, inputs.get(input), &[0, 1], chunk_len);
                }
                Call::Chunked { model, input, chunk_len, truncated } => {
                    let mode = if truncated { Backprop::Truncated } else { Backprop::Full };
                    let _ = models[model].loss_and_grad_chunked(&scan, inputs.get(input), &[1, 0], chunk_len, mode);
                }
                Call::Train { model, input, label } => {
                    let mut adam = Adam::new(AdamConfig::default(), &models[model]);
                    let _ = models[model].train_step(&mut adam, &scan, inputs.get(input), &[label, 0]);
                }
                Call::Layer { kind, other, input, state } => {
                    let b = CpuBackend::new(&scan);
                    let mut layer = RecurrentLayer::<f64>::new(KINDS[kind], 2, 2, InitConfig::default(), 1).unwrap();
                    let stranger = RecurrentLayer::<f64>::new(KINDS[other], 2, 2, InitConfig::default(), 2).unwrap();
                    let x = Array2::from_elem((2 + input, 2 + input % 2), 0.5);
                    let initial = state.then(|| LayerState::new(vec![Array2::zeros((2, 2)); input % 3]));
                    let Ok(out) = stranger.forward(&b, x.view(), 2, None) else { continue };
                    let _ = layer.forward(&b, x.view(), 2, initial.as_ref());
                    let _ = layer.backward(&b, x.view(), out.output.view(), out.cache, out.output.view(), initial.as_ref());
                }
            }
        }
    }
}

/// A carried state that does not fit the model (layer count, batch, part shapes) is an
/// error, in forward and backward.
#[test]
fn foreign_model_states_are_errors() {
    use surrogate_rnn::ModelState;
    let config = dense_config(LayerKind::GilrLstm, 2, 3, 2);
    let mut model = Classifier::<f64>::new(config, InitConfig::default(), 1).unwrap();
    let x = Array3::from_elem((4, 2, 2), 0.25);
    let input = ModelInput::Dense(x.view());
    let (pass, state) = model.forward_chunk(&Reference, input, None).unwrap();
    let part = |r, c| Array2::<f64>::zeros((r, c));
    let wrong = [
        ModelState::new(Vec::new(), 2),
        ModelState::new(state.layers().to_vec(), 3),
        ModelState::new(vec![LayerState::new(vec![part(2, 3)]); 2], 2),
        ModelState::new(vec![LayerState::new(vec![part(2, 3), part(3, 3)]); 2], 2),
    ];
    for state in &wrong {
        assert!(model.forward_chunk(&Reference, input, Some(state)).is_err());
    }
    assert!(model
        .backward_chunk(&Reference, input, pass, None, Some(&wrong[3]))
        .is_err());
    assert!(model.forward_chunk(&Reference, input, Some(&state)).is_ok());
}

/// A forward pass (or a layer cache) is refused by a model (or layer) of another
/// configuration, even where every buffer has the shape that one expects: a QRNN of
/// another width, the bounded GILR-LSTM against the paper's.
#[test]
fn passes_and_caches_of_another_configuration_are_errors() {
    let config = |layer| dense_config(layer, 2, 2, 1);
    let pairs = [
        (LayerKind::Qrnn { width: 3 }, LayerKind::Qrnn { width: 2 }),
        (LayerKind::GilrLstm, LayerKind::GilrLstmTanh),
        (LayerKind::GilrLstmTanh, LayerKind::GilrLstm),
    ];
    let x = Array3::from_elem((4, 2, 2), 0.25);
    let input = ModelInput::Dense(x.view());
    let grad = Array2::<f64>::zeros((2, 2));
    for (ran, other) in pairs {
        let model = Classifier::<f64>::new(config(ran), InitConfig::default(), 1).unwrap();
        let mut same = model.clone();
        let mut stranger = Classifier::<f64>::new(config(other), InitConfig::default(), 1).unwrap();
        let pass = || model.forward(&Reference, input).unwrap();
        assert!(
            stranger
                .backward(&Reference, input, pass(), grad.view())
                .is_err(),
            "{other:?}"
        );
        assert!(
            same.backward(&Reference, input, pass(), grad.view())
                .is_ok(),
            "{ran:?}"
        );

        let b = CpuBackend::new(&Reference);
        let layer = RecurrentLayer::<f64>::new(ran, 2, 2, InitConfig::default(), 1).unwrap();
        let mut stranger =
            RecurrentLayer::<f64>::new(other, 2, 2, InitConfig::default(), 1).unwrap();
        let rows = Array2::from_elem((8, 2), 0.5);
        let initial = LayerState::new(layer.state_dims(2).into_iter().map(Array2::zeros).collect());
        let out = layer.forward(&b, rows.view(), 2, Some(&initial)).unwrap();
        let refused = stranger.backward(
            &b,
            rows.view(),
            out.output.view(),
            out.cache,
            out.output.view(),
            None,
        );
        assert!(refused.is_err(), "{ran:?} cache into {other:?}");
    }
}

/// A broadcast input that stands for more elements than memory holds is an error, not an
/// allocation panic.
#[test]
fn an_input_too_large_to_copy_is_an_error() {
    let config = dense_config(LayerKind::Gilr, 1, 2, 1);
    let model = Classifier::<f32>::new(config, InitConfig::default(), 1).unwrap();
    let one = Array3::<f32>::zeros((1, 1, 1));
    let huge = one.broadcast((1 << 31, 1 << 31, 1)).unwrap();
    assert!(model.logits(&Reference, ModelInput::Dense(huge)).is_err());
}

/// A layer count far beyond memory (as a corrupt checkpoint could carry) is refused at
/// once, without visiting every layer.
#[test]
fn a_huge_layer_count_is_refused() {
    let config = dense_config(LayerKind::Gilr, 1, 1, 1 << 60);
    assert!(config.validate().is_err());
    assert!(Classifier::<f32>::new(config, InitConfig::default(), 1).is_err());
}

/// A constant gate bias that is not finite is refused by models and standalone layers.
#[test]
fn a_non_finite_constant_gate_bias_is_refused() {
    let config = dense_config(LayerKind::Gilr, 1, 2, 1);
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let init = InitConfig {
            gate_bias: surrogate_rnn::GateBiasInit::Constant { value },
        };
        assert!(Classifier::<f32>::new(config, init, 1).is_err(), "{value}");
        assert!(RecurrentLayer::<f32>::new(LayerKind::Gilr, 1, 2, init, 1).is_err());
    }
    let finite = InitConfig {
        gate_bias: surrogate_rnn::GateBiasInit::Constant { value: 1.0 },
    };
    assert!(Classifier::<f32>::new(config, finite, 1).is_ok());
}
