//! The ready file: how a script or a test learns where the broker listens.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// What the ready file holds, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// The `host:port,...` list to put in `SMARTFLOW_KAFKA_BROKERS`.
    pub bootstrap_servers: String,
    /// `host:port` of the HTTP control API.
    pub control_addr: String,
}

impl ReadyInfo {
    /// Writes the file under a temporary name next to `path`, then renames it into place, so a
    /// reader polling for `path` sees either nothing or the whole file.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let temporary = temporary_name(path);
        let json = serde_json::to_string(self).context("encoding the ready file")?;
        std::fs::write(&temporary, json + "\n")
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, path)
            .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))
    }

    /// Reads a ready file written by [`ReadyInfo::write`].
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("decoding {}", path.display()))
    }
}

/// Removes the ready file on the way out; a failure is only logged, since the broker is
/// stopping anyway.
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the ready file");
        }
    }
}

/// `DIR/.NAME.tmp-PID`: in the same directory, so the rename cannot cross file systems.
fn temporary_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ready".to_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_leaves_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("sf-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ready.json");
        let info = ReadyInfo {
            bootstrap_servers: "127.0.0.1:1".into(),
            control_addr: "127.0.0.1:2".into(),
        };
        info.write(&path).unwrap();
        assert_eq!(ReadyInfo::read(&path).unwrap(), info);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ready.json")]);
        remove(&path);
        assert!(!path.exists());
        let _ = std::fs::remove_dir(&dir);
    }
}
