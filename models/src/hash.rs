//! sha256 of model files and the `<sha256> <bytes>` marker written next to a verified GGUF:
//! used by [`crate::fetch`] (verifies what it downloads) and [`crate::convert`] (records the
//! GGUF's hash in the manifest), so neither depends on the other for it.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::error::{Context, Result};

fn marker_path(gguf: &Path) -> PathBuf {
    let mut name = gguf.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    gguf.with_file_name(name)
}

/// The `<sha256> <bytes>` marker written next to a verified GGUF.
pub(crate) fn read_marker(gguf: &Path) -> Option<(String, u64)> {
    let text = fs::read_to_string(marker_path(gguf)).ok()?;
    let mut it = text.split_whitespace();
    let sha = it.next()?.to_ascii_lowercase();
    let size = it.next()?.parse().ok()?;
    (sha.len() == 64).then_some((sha, size))
}

/// Writes the marker of a verified GGUF.
pub(crate) fn write_marker(gguf: &Path, sha: &str, size: u64) -> Result<()> {
    let path = marker_path(gguf);
    fs::write(&path, format!("{sha} {size}\n")).ctx(|| format!("writing {}", path.display()))
}

/// Removes the marker, if any (before the GGUF it vouches for is replaced).
pub(crate) fn remove_marker(gguf: &Path) {
    let _ = fs::remove_file(marker_path(gguf));
}

/// Hex sha256 of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .ctx(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes through to `inner` while hashing and counting.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, and the hex sha256 and count of the bytes written through.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
