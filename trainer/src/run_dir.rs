//! Output folders: a fresh folder per run, never silently overwritten.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Prepares the output folder of a run.
///
/// * `explicit = Some(dir)`: `dir` is used as is. If it already holds files, that is an
///   error unless `force` is set, in which case the files this tool writes are removed
///   first (nothing else in the folder is touched).
/// * `explicit = None`: a new folder `<parent>/<stem>-<k>` with the smallest free `k ≥ 1`.
pub fn prepare(
    explicit: Option<&Path>,
    parent: &Path,
    stem: &str,
    force: bool,
    owned_files: &[&str],
) -> Result<PathBuf> {
    let dir = match explicit {
        Some(dir) => {
            if is_non_empty(dir)? {
                if !force {
                    bail!(
                        "the output folder `{}` already holds files; choose another --out, \
                         pass --force to overwrite it, or, for a `trainer synthetic` run that \
                         wrote a checkpoint, `trainer synthetic --resume {}` to continue it",
                        dir.display(),
                        dir.display()
                    );
                }
                for name in owned_files {
                    let path = dir.join(name);
                    if path.exists() {
                        std::fs::remove_file(&path)
                            .with_context(|| format!("removing `{}`", path.display()))?;
                    }
                }
            }
            dir.to_path_buf()
        }
        None => next_free(parent, stem)?,
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the output folder `{}`", dir.display()))?;
    Ok(dir)
}

/// Runs `work` for the folder `dir`; if it fails and `dir` holds nothing, removes `dir`, so
/// a failed command leaves no empty folder behind.
pub fn remove_if_empty_on_error<T>(dir: &Path, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let result = work();
    if result.is_err() && matches!(is_non_empty(dir), Ok(false)) {
        let _ = std::fs::remove_dir(dir);
    }
    result
}

fn is_non_empty(dir: &Path) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    if !dir.is_dir() {
        bail!("`{}` exists and is not a folder", dir.display());
    }
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("reading `{}`", dir.display()))?;
    Ok(entries.next().is_some())
}

fn next_free(parent: &Path, stem: &str) -> Result<PathBuf> {
    if parent.exists() && !parent.is_dir() {
        bail!(
            "--runs-dir `{}` exists and is not a folder",
            parent.display()
        );
    }
    for k in 1..100_000 {
        let candidate = parent.join(format!("{stem}-{k}"));
        // `create_dir` fails if the folder exists, so two runs started at once cannot
        // pick the same folder.
        match std::fs::create_dir_all(parent).and_then(|()| std::fs::create_dir(&candidate)) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating `{}`", candidate.display())),
        }
    }
    bail!("no free run folder name under `{}`", parent.display())
}
