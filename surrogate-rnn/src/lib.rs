//! # surrogate-rnn
//!
//! Linear surrogate RNNs — GILR, GILR-LSTM, QRNN, SRU — and the LSTM baseline, with
//! hand-derived gradients, trainable on the CPU (Martin & Cundy 2018; PAPER.md §2).
//!
//! Design decision: **no autograd framework.** Each layer is a plain struct with a
//! `forward` that returns its output plus a cache, a hand-derived `backward` that
//! accumulates parameter gradients and returns the input gradient, and a parameter
//! visitor ([`Parameters`]) that the optimizer and checkpoints use. Layers compute only
//! through a compute [`Backend`] (products, fused gate passes, reductions, buffers, the
//! scan): [`CpuBackend`] trains, [`ReferenceBackend`] is the plain-loop oracle of the
//! [`backend::conformance`] suite. Every linear recurrence runs on a
//! [`scan_core::LinearScan`] passed as an argument, so switching from the serial to the
//! parallel scan is one argument and changes no number beyond rounding — the paper's
//! "single line of code". Recurrent layers take the state they start from and return the
//! state they end in, so a sequence can be run, trained ([`Classifier::loss_and_grad_chunked`])
//! and streamed ([`Classifier::evaluate_streaming`]) chunk by chunk.
//!
//! ```
//! use scan_core::Reference;
//! use surrogate_rnn::{
//!     Adam, AdamConfig, Classifier, GateBiasInit, InitConfig, InputKind, LayerKind,
//!     ModelConfig, ModelInput, SyntheticTask,
//! };
//!
//! let task = SyntheticTask::new(16, 8)?;
//! let config = ModelConfig {
//!     layer: LayerKind::GilrLstm,
//!     input: InputKind::OneHot { vocab: task.dim() },
//!     input_projection: Some(4),
//!     hidden: 8,
//!     layers: 2,
//!     classes: SyntheticTask::N_CLASSES,
//! };
//! let init = InitConfig { gate_bias: GateBiasInit::Chrono { max_len: 16 } };
//! let mut model = Classifier::<f32>::new(config, init, 7)?;
//! let mut adam = Adam::new(AdamConfig::default(), &model);
//! let batch = task.batch_for_step::<f32>(7, 0, 4)?;
//! let stats = model.train_step(&mut adam, &Reference, ModelInput::OneHot(&batch.input), &batch.labels)?;
//! assert!(stats.batch.loss.is_finite());
//! # Ok::<(), surrogate_rnn::ModelError>(())
//! ```
//!
//! ## Memory
//!
//! Training keeps, per recurrent layer, its output and its cache, in elements of `E`
//! (`N = T·B·n`): GILR-LSTM `9N` (6 gates, `h̃`, `c`, `h`), QRNN and SRU `5N`, GILR `3N`,
//! LSTM `6N`. The backward pass of one layer adds at most `3N` scratch plus its input
//! gradient `T·B·m`. The peak for `L` GILR-LSTM layers with an embedding of width `d` is
//! therefore about `(9L + 4)·T·B·n + 2·T·B·d` elements; for `L = 2, n = 64, d ≤ 64,
//! T = 2²⁰, B = 2` in f32 that is ≈ 12 GiB. The forward pass alone
//! ([`Classifier::logits`]) needs only two layers' activations at a time.
#![warn(missing_docs)]
#![deny(unsafe_code)]

mod activation;
mod adam;
pub mod backend;
mod checkpoint;

mod data;
mod error;
mod init;
pub mod layers;
mod loss;
mod model;
mod ops;
mod param;
mod real;
mod workspace;

pub use adam::{Adam, AdamConfig, StepReport};

pub use backend::{Backend, CpuBackend, ReferenceBackend, Subnormals};
pub use checkpoint::{
    load_checkpoint, load_checkpoint_into, read_checkpoint_meta, save_checkpoint, CheckpointMeta,
};
pub use data::{SyntheticBatch, SyntheticChunks, SyntheticTask};
pub use error::ModelError;
pub use init::{GateBiasInit, InitConfig};
pub use layers::{
    Dense, Embedding, Gilr, GilrLstm, Layer, LayerCache, LayerGrads, LayerOutput, LayerState, Lstm,
    OneHotSequence, Qrnn, Sru,
};
pub use loss::{softmax_cross_entropy, LossOutput};
pub use model::{
    Backprop, BatchStats, Classifier, ForwardPass, InputEncoder, InputKind, LayerKind, ModelConfig,
    ModelInput, ModelState, PassGrads, RecurrentLayer, Stream, TrainStats,
};
pub use param::{Param, ParamMut, ParamVisitor, ParamVisitorMut, Parameters};
pub use real::Real;
