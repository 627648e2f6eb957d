//! Stream keys: who may broadcast which stream.
//!
//! Without a keys file anyone may publish any free name (development mode, announced at start).
//! With one (`stream=key` lines), publishing a stream needs its key, over WebSocket and WHIP
//! alike, and a stream that has no line cannot be published. The file is re-read on SIGHUP; a
//! file that fails to parse then leaves the keys as they were. Keys are never logged.

use golive_proto::{ErrorCode, ProtocolError, StreamName};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {why}")]
    Parse {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// The keys in force.
#[derive(Debug, Default)]
pub struct StreamKeys {
    path: Option<PathBuf>,
    keys: RwLock<HashMap<String, String>>,
}

fn parse(path: &Path, text: &str) -> Result<HashMap<String, String>, KeysError> {
    let mut keys = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why: &str| KeysError::Parse {
            path: path.to_owned(),
            line: i + 1,
            why: why.to_owned(),
        };
        let (stream, key) = line
            .split_once('=')
            .ok_or_else(|| err("expected stream=key"))?;
        let (stream, key) = (stream.trim(), key.trim());
        StreamName::new(stream).map_err(|e| err(&e.to_string()))?;
        if key.is_empty() {
            return Err(err("the key is empty"));
        }
        if keys.insert(stream.to_owned(), key.to_owned()).is_some() {
            return Err(err("the stream appears twice"));
        }
    }
    Ok(keys)
}

fn read(path: &Path) -> Result<HashMap<String, String>, KeysError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Compares without stopping at the first difference, so the time taken says nothing about
/// how much of a guessed key was right.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

impl StreamKeys {
    /// Development mode: no keys.
    pub fn open() -> Self {
        Self::default()
    }

    pub fn load(path: &Path) -> Result<Self, KeysError> {
        Ok(Self {
            keys: RwLock::new(read(path)?),
            path: Some(path.to_owned()),
        })
    }

    pub fn is_enforced(&self) -> bool {
        self.path.is_some()
    }

    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-reads the file; on error the keys in force stay.
    pub fn reload(&self) -> Result<usize, KeysError> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let fresh = read(path)?;
        let n = fresh.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(n)
    }

    /// May `key` publish `stream`?
    pub fn check(&self, stream: &StreamName, key: Option<&str>) -> Result<(), ProtocolError> {
        if !self.is_enforced() {
            return Ok(());
        }
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let ok = match (keys.get(stream.as_str()), key) {
            (Some(want), Some(got)) => same(want, got),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                format!("publishing \"{stream}\" needs its stream key"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> StreamName {
        StreamName::new(s).unwrap()
    }

    #[test]
    fn open_mode_lets_anyone_publish() {
        let k = StreamKeys::open();
        assert!(k.check(&name("any"), None).is_ok());
        assert!(!k.is_enforced());
    }

    #[test]
    fn keys_file_is_enforced_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("golive-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys");
        std::fs::write(&path, "# streams\nshow = s3cret\n\nother=k2\n").unwrap();
        let k = StreamKeys::load(&path).unwrap();
        assert!(k.check(&name("show"), Some("s3cret")).is_ok());
        for (stream, key) in [
            ("show", Some("wrong")),
            ("show", None),
            ("show", Some("s3cre")),
            ("nokey", Some("s3cret")),
        ] {
            let e = k.check(&name(stream), key).unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized);
            assert!(!e.message.contains("s3cret"), "the key is never echoed");
        }
        std::fs::write(&path, "show=rotated\n").unwrap();
        assert_eq!(k.reload().unwrap(), 1);
        assert!(k.check(&name("show"), Some("s3cret")).is_err());
        assert!(k.check(&name("show"), Some("rotated")).is_ok());
        // A broken file keeps the keys in force.
        std::fs::write(&path, "garbage line\n").unwrap();
        assert!(matches!(k.reload(), Err(KeysError::Parse { line: 1, .. })));
        assert!(k.check(&name("show"), Some("rotated")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_files_say_where() {
        let p = Path::new("keys");
        assert!(matches!(
            parse(p, "a=b\nbad name=x\n"),
            Err(KeysError::Parse { line: 2, .. })
        ));
        assert!(matches!(
            parse(p, "a=\n"),
            Err(KeysError::Parse { line: 1, .. })
        ));
        assert!(matches!(
            parse(p, "a=1\na=2\n"),
            Err(KeysError::Parse { line: 2, .. })
        ));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }
}
