//! Files replaced as a whole: written to a temporary file in the same folder, synced, then
//! renamed over the target. A kill or a full disk leaves either the old file or the new
//! one, never a truncated one, and the temporary is removed on error.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The marker in temporary names: `<stem>.tmp-<pid>.<ext>` here (the extension stays last
/// because the plot encoder picks the format from it), `<file>.tmp-<pid>` for
/// surrogate-rnn's checkpoints.
const TEMP_MARKER: &str = ".tmp-";

/// The temporary file `path` is written to before the rename.
pub fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_stem().unwrap_or_default().to_os_string();
    name.push(format!("{TEMP_MARKER}{}", std::process::id()));
    if let Some(extension) = path.extension() {
        name.push(".");
        name.push(extension);
    }
    path.with_file_name(name)
}

/// The file a temporary name stands for, if `file_name` is one.
fn temporary_of(file_name: &str) -> Option<String> {
    let (stem, rest) = file_name.split_once(TEMP_MARKER)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (pid, extension) = rest.split_at(digits);
    if pid.is_empty() || !(extension.is_empty() || extension.starts_with('.')) {
        return None;
    }
    Some(format!("{stem}{extension}"))
}

/// Moves a finished temporary over `path` and syncs the folder entry.
pub fn commit(temp: &Path, path: &Path) -> Result<()> {
    let result = std::fs::rename(temp, path);
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result.with_context(|| format!("renaming `{}` to `{}`", temp.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        // Best effort: some file systems cannot open folders for syncing.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Writes `path` through `fill` atomically.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let temp = temporary(path);
    let written = (|| -> Result<()> {
        let file = File::create(&temp).with_context(|| format!("creating `{}`", temp.display()))?;
        let mut writer = BufWriter::new(file);
        fill(&mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("writing `{}`", path.display()));
    }
    commit(&temp, path)
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| Ok(w.write_all(bytes)?))
}

/// Removes the temporaries that a killed run left in `dir` for each of `names`; returns
/// the removed paths.
pub fn remove_stale_temporaries(dir: &Path, names: &[&str]) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading `{}`", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading `{}`", dir.display()))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if temporary_of(file_name).is_some_and(|original| names.contains(&original.as_str())) {
            let path = entry.path();
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the stale `{}`", path.display()))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        assert_eq!(temporary(&path).extension().unwrap(), "json");
        write(&path, b"old").unwrap();
        let err = write_with(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full").into())
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("disk full"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A first write that fails leaves no file at all.
        let fresh = dir.path().join("fresh.json");
        assert!(write_with(&fresh, |_| Err(anyhow::anyhow!("no space"))).is_err());
        assert!(!fresh.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn only_temporaries_of_the_named_files_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "checkpoint.safetensors.tmp-123",
            "metrics.tmp-7.csv",
            "checkpoint.safetensors",
            "learning_curve.tmp-8.png.keep",
            "notes.txt.tmp-5",
            "metrics.csv.tmp-x",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let mut removed =
            remove_stale_temporaries(dir.path(), &["checkpoint.safetensors", "metrics.csv"])
                .unwrap();
        removed.sort();
        assert_eq!(
            removed,
            [
                dir.path().join("checkpoint.safetensors.tmp-123"),
                dir.path().join("metrics.tmp-7.csv")
            ]
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
    }
}
