//! Size checks before any work: every product of sizes is computed with overflow checks,
//! and the memory a command needs (activations, parameters, optimizer state) is compared
//! with the memory available, so an impossible request is an error that names the flags,
//! never a panic in a shape constructor or an abort in the allocator.

use anyhow::{bail, Result};
use surrogate_rnn::{InputKind, LayerKind, ModelConfig};

use crate::system;

/// `--threads` may ask for at most this many threads per logical core.
const THREADS_PER_CORE: usize = 4;

/// The share of `MemAvailable` a command may plan to use.
const MEMORY_SHARE: f64 = 0.9;

/// Bytes of one element (f32).
const ELEMENT: u128 = 4;

/// The product of `factors`, or an error naming `what` when it cannot be the element
/// count of an array (more than `isize::MAX`).
pub fn elements(what: &str, factors: &[usize]) -> Result<u128> {
    let limit = isize::MAX as u128;
    let mut product: u128 = 1;
    for &f in factors {
        product = match product.checked_mul(f as u128) {
            Some(p) if p <= limit => p,
            _ => bail!(
                "{what} is too large: {} does not fit in memory addresses",
                factors
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(" × ")
            ),
        };
    }
    Ok(product)
}

fn sum(what: &str, terms: &[u128]) -> Result<u128> {
    terms
        .iter()
        .try_fold(0u128, |a, &t| a.checked_add(t))
        .filter(|&s| s <= isize::MAX as u128)
        .ok_or_else(|| anyhow::anyhow!("{what} is too large to address"))
}

/// The number of scalar parameters of a model (a slight over-estimate: biases of every
/// width are counted).
pub fn parameter_count(config: &ModelConfig) -> Result<u128> {
    let what = "the model";
    let n = config.hidden;
    let mut terms = Vec::new();
    if let (InputKind::OneHot { vocab }, Some(d)) = (config.input, config.input_projection) {
        terms.push(elements(what, &[vocab, d])?);
        terms.push(d as u128);
    } else if let (InputKind::Dense { size }, Some(d)) = (config.input, config.input_projection) {
        terms.push(elements(what, &[size + 1, d])?);
    }
    let first = config.first_layer_input();
    for layer in 0..config.layers.min(2) {
        let m = if layer == 0 { first } else { n };
        let copies = if layer == 0 { 1 } else { config.layers - 1 };
        let per_layer = match config.layer {
            LayerKind::Gilr => sum(what, &[elements(what, &[2, m, n])?, 2 * n as u128])?,
            LayerKind::GilrLstm | LayerKind::GilrLstmTanh => sum(
                what,
                &[
                    elements(what, &[6, m, n])?,
                    elements(what, &[4, n, n])?,
                    elements(what, &[6, n])?,
                ],
            )?,
            LayerKind::Lstm => sum(
                what,
                &[
                    elements(what, &[4, m, n])?,
                    elements(what, &[4, n, n])?,
                    elements(what, &[4, n])?,
                ],
            )?,
            LayerKind::Qrnn { width } => sum(
                what,
                &[elements(what, &[width, m, 3, n])?, elements(what, &[3, n])?],
            )?,
            LayerKind::Sru => sum(
                what,
                &[elements(what, &[3, m, n])?, elements(what, &[3, n])?],
            )?,
        };
        let layers = per_layer
            .checked_mul(copies as u128)
            .ok_or_else(|| anyhow::anyhow!("{what} is too large"))?;
        terms.push(layers);
    }
    terms.push(elements(what, &[n + 1, config.classes])?);
    sum(what, &terms)
}

/// Bytes one training step of `config` needs at `seq_len × batch`: per layer `k·T·B·n`
/// activations (k = 9 GILR-LSTM, 6 LSTM, 5 QRNN and SRU, 3 GILR), `4·T·B·n` of backward
/// scratch, `2·T·B·d` for the input encoding and its gradient, the one-hot input, and
/// eight copies of the parameters (values, gradients, two Adam moments, and the
/// transient copies of a checkpoint).
pub fn training_bytes(config: &ModelConfig, seq_len: usize, batch: usize) -> Result<u128> {
    let what = "one training step";
    let per_layer = match config.layer {
        LayerKind::GilrLstm | LayerKind::GilrLstmTanh => 9,
        LayerKind::Lstm => 6,
        LayerKind::Qrnn { .. } | LayerKind::Sru => 5,
        LayerKind::Gilr => 3,
    };
    let events = elements(what, &[seq_len, batch])?;
    let k = (per_layer as u128)
        .checked_mul(config.layers as u128)
        .and_then(|k| k.checked_add(4))
        .ok_or_else(|| anyhow::anyhow!("{what} is too large"))?;
    let activations = elements(what, &[events as usize, config.hidden])?
        .checked_mul(k)
        .ok_or_else(|| anyhow::anyhow!("{what} is too large"))?;
    let encoding = elements(what, &[events as usize, config.first_layer_input(), 2])?;
    let parameters = parameter_count(config)?
        .checked_mul(8)
        .ok_or_else(|| anyhow::anyhow!("{what} is too large"))?;
    let total = sum(what, &[activations, encoding, 2 * events, parameters])?;
    Ok(total * ELEMENT)
}

/// Bytes of `count` f32 arrays of `factors` elements each.
pub fn array_bytes(what: &str, count: usize, factors: &[usize]) -> Result<u128> {
    let mut all = factors.to_vec();
    all.push(count);
    Ok(elements(what, &all)? * ELEMENT)
}

/// Fails when `bytes` exceed the share of the available memory a command may use.
pub fn check_memory(what: &str, bytes: u128, hint: &str) -> Result<()> {
    if let Some(available) = system::available_memory_bytes() {
        if bytes as f64 > MEMORY_SHARE * available as f64 {
            bail!(
                "{what} needs about {} but only {} of memory is available; {hint}",
                system::format_bytes(bytes as f64),
                system::format_bytes(available as f64)
            );
        }
    }
    Ok(())
}

/// Checks `--threads`: at least 1, at most a few per logical core.
pub fn check_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let most = THREADS_PER_CORE * cores;
        if n == 0 || n > most {
            bail!(
                "--threads must lie in 1..={most} ({THREADS_PER_CORE} per logical core of \
                 this machine; got {n}): more threads than cores only add switching"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(layer: LayerKind, vocab: usize, hidden: usize) -> ModelConfig {
        ModelConfig {
            layer,
            input: InputKind::OneHot { vocab },
            input_projection: Some(16),
            hidden,
            layers: 2,
            classes: 2,
        }
    }

    #[test]
    fn overflowing_sizes_are_errors() {
        assert!(elements("x", &[usize::MAX, 2]).is_err());
        assert_eq!(elements("x", &[3, 4]).unwrap(), 12);
        let huge = config(LayerKind::GilrLstm, usize::MAX, 32);
        assert!(format!("{:#}", training_bytes(&huge, 16, 16).unwrap_err()).contains("too large"));
        let wide = config(LayerKind::Qrnn { width: usize::MAX }, 8, 32);
        assert!(parameter_count(&wide).is_err());
        assert!(training_bytes(&config(LayerKind::Gilr, 8, 8), usize::MAX, 2).is_err());
    }

    #[test]
    fn the_parameter_count_bounds_the_models() {
        use surrogate_rnn::{Classifier, InitConfig, Parameters};
        for layer in [
            LayerKind::Gilr,
            LayerKind::GilrLstm,
            LayerKind::Lstm,
            LayerKind::Qrnn { width: 3 },
        ] {
            let config = config(layer, 8, 12);
            let model = Classifier::<f32>::new(config, InitConfig::default(), 1).unwrap();
            let counted = parameter_count(&config).unwrap();
            let actual = model.n_params() as u128;
            assert!(
                counted >= actual && counted <= actual + 64,
                "{layer:?}: {counted} vs {actual}"
            );
        }
    }
}
