//! Checkpoints: every parameter, the Adam state and the step, in one safetensors file.
//!
//! Tensors are named `param.<name>`, `adam.m.<name>` and `adam.v.<name>` after the
//! parameter names of [`Parameters`]; the metadata holds the model configuration (JSON),
//! the optimizer configuration (JSON), the seed, the step, the element type and any
//! caller-supplied `extra` entries, and a `checksum` over every other metadata entry and
//! every tensor (name, dtype, shape, bytes), verified before anything is read from the
//! file, so a flipped bit or an edited entry is an error rather than a silently different
//! run. Files are written to a temporary file in the same folder and renamed over the
//! target, so a crash never leaves a half-written checkpoint.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{SafeTensors, TensorView};
use safetensors::{Dtype, View};

use crate::{Adam, AdamConfig, Classifier, InitConfig, ModelConfig, ModelError, Parameters, Real};

const FORMAT: &str = "surrogate-rnn.checkpoint.v2";
const CHECKSUM_KEY: &str = "checksum";

/// FNV-1a over 64-bit little-endian words (bytes for the tail). Each word updates the
/// state bijectively, so any single changed word always changes the result; it guards
/// against corruption, not against forgery.
struct Checksum(u64);

impl Checksum {
    const PRIME: u64 = 0x0000_0100_0000_01B3;

    fn new() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }

    fn bytes(&mut self, data: &[u8]) {
        let mut words = data.chunks_exact(8);
        for word in &mut words {
            let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            self.0 = (self.0 ^ word).wrapping_mul(Self::PRIME);
        }
        for &byte in words.remainder() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
        // The length separates fields, so moving bytes from one to the next changes it.
        self.0 = (self.0 ^ data.len() as u64).wrapping_mul(Self::PRIME);
    }

    fn tensor(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) {
        self.bytes(name.as_bytes());
        self.bytes(format!("{dtype:?}").as_bytes());
        for &dim in shape {
            self.bytes(&(dim as u64).to_le_bytes());
        }
        self.bytes(data);
    }

    /// Every metadata entry but the checksum itself, in key order.
    fn metadata<'a>(&mut self, entries: impl Iterator<Item = (&'a String, &'a String)>) {
        let mut entries: Vec<_> = entries.filter(|(k, _)| *k != CHECKSUM_KEY).collect();
        entries.sort();
        for (key, value) in entries {
            self.bytes(key.as_bytes());
            self.bytes(value.as_bytes());
        }
    }

    fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The metadata of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    /// The model architecture.
    pub config: ModelConfig,
    /// The optimizer hyper-parameters at save time.
    pub optimizer: AdamConfig,
    /// The seed the run was started with.
    pub seed: u64,
    /// The number of optimizer steps taken.
    pub step: u64,
    /// Free-form entries of the caller (e.g. the trainer's command line).
    pub extra: BTreeMap<String, String>,
}

struct Tensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }

    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn encode<'a, E: Real>(values: impl Iterator<Item = &'a E>, shape: &[usize]) -> Tensor {
    let mut bytes = Vec::with_capacity(shape.iter().product::<usize>() * std::mem::size_of::<E>());
    values.for_each(|v| v.write_le(&mut bytes));
    Tensor {
        dtype: E::DTYPE,
        shape: shape.to_vec(),
        bytes,
    }
}

fn checkpoint_error(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes `model` and `optimizer` to `path` atomically (temporary file, then rename).
pub fn save_checkpoint<E: Real>(
    path: &Path,
    model: &Classifier<E>,
    optimizer: &Adam<E>,
    seed: u64,
    extra: &BTreeMap<String, String>,
) -> Result<(), ModelError> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut index = 0;
    let mut mismatch = false;
    model.visit_params(&mut |name, value, _| {
        tensors.push((format!("param.{name}"), encode(value.iter(), value.shape())));
        match (
            optimizer.param_names().get(index),
            optimizer.first_moments().get(index),
            optimizer.second_moments().get(index),
        ) {
            (Some(n), Some(m), Some(v)) if n == name && m.shape() == value.shape() => {
                tensors.push((format!("adam.m.{name}"), encode(m.iter(), m.shape())));
                tensors.push((format!("adam.v.{name}"), encode(v.iter(), v.shape())));
            }
            _ => mismatch = true,
        }
        index += 1;
    });
    if mismatch || index != optimizer.param_names().len() {
        return Err(checkpoint_error(
            path,
            "the optimizer state does not belong to this model; nothing was written",
        ));
    }
    let json = |v: serde_json::Result<String>| v.map_err(|e| checkpoint_error(path, e.to_string()));
    let mut metadata = HashMap::new();
    metadata.insert("format".to_owned(), FORMAT.to_owned());
    metadata.insert("dtype".to_owned(), E::NAME.to_owned());
    metadata.insert(
        "config".to_owned(),
        json(serde_json::to_string(model.config()))?,
    );
    metadata.insert(
        "optimizer".to_owned(),
        json(serde_json::to_string(&optimizer.config))?,
    );
    metadata.insert("seed".to_owned(), seed.to_string());
    metadata.insert("step".to_owned(), optimizer.steps().to_string());
    metadata.insert("extra".to_owned(), json(serde_json::to_string(extra))?);
    let mut checksum = Checksum::new();
    checksum.metadata(metadata.iter());
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in &tensors {
        checksum.tensor(name, t.dtype, &t.shape, &t.bytes);
    }
    metadata.insert(CHECKSUM_KEY.to_owned(), checksum.hex());
    let bytes = safetensors::serialize(
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &Some(metadata),
    )
    .map_err(|e| checkpoint_error(path, format!("serialising: {e}")))?;
    write_atomically(path, &bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let io = |operation, source| ModelError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| checkpoint_error(path, "the path has no file name"))?;
    let mut temp_name = file_name.to_os_string();
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp: PathBuf = path.with_file_name(temp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(io("writing checkpoint", source));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        operation: "reading checkpoint",
        path: path.to_path_buf(),
        source,
    })
}

/// Parses the file, checks its format and checksum and returns its metadata, its element
/// type and its tensors.
fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(CheckpointMeta, String, SafeTensors<'a>), ModelError> {
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| checkpoint_error(path, format!("not a valid safetensors file: {e}")))?;
    let map = metadata
        .metadata()
        .as_ref()
        .ok_or_else(|| checkpoint_error(path, "no metadata (not a surrogate-rnn checkpoint)"))?;
    let get = |key: &str| {
        map.get(key)
            .ok_or_else(|| checkpoint_error(path, format!("metadata entry `{key}` is missing")))
    };
    if get("format")? != FORMAT {
        return Err(checkpoint_error(
            path,
            format!(
                "format `{}` is not `{FORMAT}` (files of an older version carry no checksum)",
                get("format")?
            ),
        ));
    }
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| checkpoint_error(path, format!("corrupt or truncated: {e}")))?;
    let mut checksum = Checksum::new();
    checksum.metadata(map.iter());
    let mut names = tensors.names();
    names.sort();
    for name in names {
        let view = tensors
            .tensor(name)
            .map_err(|e| checkpoint_error(path, format!("tensor `{name}`: {e}")))?;
        checksum.tensor(name, view.dtype(), view.shape(), view.data());
    }
    if *get(CHECKSUM_KEY)? != checksum.hex() {
        return Err(checkpoint_error(
            path,
            format!(
                "checksum mismatch (stored {}, computed {}): the file was damaged or edited",
                get(CHECKSUM_KEY)?,
                checksum.hex()
            ),
        ));
    }
    let parse_err = |key: &str, e: &dyn std::fmt::Display| {
        checkpoint_error(path, format!("metadata entry `{key}` is invalid: {e}"))
    };
    let config = serde_json::from_str(get("config")?).map_err(|e| parse_err("config", &e))?;
    let optimizer =
        serde_json::from_str(get("optimizer")?).map_err(|e| parse_err("optimizer", &e))?;
    let extra = serde_json::from_str(get("extra")?).map_err(|e| parse_err("extra", &e))?;
    let seed = get("seed")?.parse().map_err(|e| parse_err("seed", &e))?;
    let step = get("step")?.parse().map_err(|e| parse_err("step", &e))?;
    Ok((
        CheckpointMeta {
            config,
            optimizer,
            seed,
            step,
            extra,
        },
        get("dtype")?.clone(),
        tensors,
    ))
}

/// Reads the metadata of a checkpoint (e.g. to build the model it belongs to), after
/// verifying the file's checksum.
pub fn read_checkpoint_meta(path: &Path) -> Result<CheckpointMeta, ModelError> {
    Ok(parse(path, &read_file(path)?)?.0)
}

fn decode<E: Real>(
    path: &Path,
    tensors: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<ArrayD<E>, ModelError> {
    let view: TensorView<'_> = tensors
        .tensor(name)
        .map_err(|_| checkpoint_error(path, format!("tensor `{name}` is missing")))?;
    if view.dtype() != E::DTYPE {
        return Err(checkpoint_error(
            path,
            format!(
                "tensor `{name}` has dtype {:?}, the model uses {}",
                view.dtype(),
                E::NAME
            ),
        ));
    }
    if view.shape() != shape {
        return Err(checkpoint_error(
            path,
            format!(
                "tensor `{name}` has shape {:?}, the model expects {shape:?}",
                view.shape()
            ),
        ));
    }
    let size = std::mem::size_of::<E>();
    let values: Vec<E> = view
        .data()
        .chunks_exact(size)
        .map(E::read_le)
        .collect::<Result<_, _>>()?;
    ArrayD::from_shape_vec(IxDyn(shape), values)
        .map_err(|e| checkpoint_error(path, format!("tensor `{name}`: {e}")))
}

/// Restores parameters and optimizer state from `path` into an existing model.
///
/// The checksum and every tensor are validated (present, same dtype, same shape, same
/// configuration) before anything is written, so on error `model` and `optimizer` are unchanged.
pub fn load_checkpoint_into<E: Real>(
    path: &Path,
    model: &mut Classifier<E>,
    optimizer: &mut Adam<E>,
) -> Result<CheckpointMeta, ModelError> {
    let bytes = read_file(path)?;
    let (meta, dtype, tensors) = parse(path, &bytes)?;
    if dtype != E::NAME {
        return Err(checkpoint_error(
            path,
            format!("it holds {dtype} values, the model uses {}", E::NAME),
        ));
    }
    if &meta.config != model.config() {
        return Err(checkpoint_error(
            path,
            format!(
                "it was saved from a model configured as {:?}, not {:?}",
                meta.config,
                model.config()
            ),
        ));
    }
    let mut params = Vec::new();
    let mut first = Vec::new();
    let mut second = Vec::new();
    let mut failure = None;
    model.visit_params(&mut |name, value, _| {
        if failure.is_some() {
            return;
        }
        let shape = value.shape();
        let loaded = (|| {
            Ok::<_, ModelError>((
                decode::<E>(path, &tensors, &format!("param.{name}"), shape)?,
                decode::<E>(path, &tensors, &format!("adam.m.{name}"), shape)?,
                decode::<E>(path, &tensors, &format!("adam.v.{name}"), shape)?,
            ))
        })();
        match loaded {
            Ok((p, m, v)) => {
                params.push(p);
                first.push(m);
                second.push(v);
            }
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if tensors.len() != 3 * params.len() {
        return Err(checkpoint_error(
            path,
            format!(
                "it holds {} tensors, the model has {} parameters (3 tensors each)",
                tensors.len(),
                params.len()
            ),
        ));
    }
    let mut fresh = Adam::new(meta.optimizer, &*model);
    if fresh.param_names() != optimizer.param_names() {
        return Err(checkpoint_error(
            path,
            "the optimizer state passed in belongs to another model",
        ));
    }
    let mut loaded = params.into_iter();
    model.visit_params_mut(&mut |_, mut p| {
        p.value
            .assign(&loaded.next().expect("one value per parameter"));
        p.grad.fill(E::zero());
    });
    fresh.restore(meta.step, first, second);
    fresh.config = optimizer.config;
    *optimizer = fresh;
    Ok(meta)
}

/// Builds the model and optimizer a checkpoint was saved from and restores their state.
/// The optimizer gets the hyper-parameters stored in the checkpoint.
pub fn load_checkpoint<E: Real>(
    path: &Path,
) -> Result<(Classifier<E>, Adam<E>, CheckpointMeta), ModelError> {
    let meta = read_checkpoint_meta(path)?;
    let mut model = Classifier::new(meta.config, InitConfig::default(), meta.seed)?;
    let mut optimizer = Adam::new(meta.optimizer, &model);
    let meta = load_checkpoint_into(path, &mut model, &mut optimizer)?;
    Ok((model, optimizer, meta))
}
