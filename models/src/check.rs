//! Validates a model directory before a loader sees it.

use std::{
    fs::{self, File},
    io::Read,
    path::Path,
};

use crate::error::{Context, Error, Result};

/// Checks that `path` is a loadable HF-style model directory: it exists, and holds a
/// parseable `config.json`, a parseable `tokenizer.json` and at least one `*.safetensors`
/// whose header is valid and whose size matches its header.
///
/// Call this before handing a path to mistral.rs or a trainer: a path that does not exist
/// must be reported here rather than be taken for a model-hub id.
pub fn check_model_dir(path: &Path) -> Result<()> {
    if !path.exists() {
        return Err(Error::MissingModelDir(path.to_path_buf()));
    }
    if !path.is_dir() {
        return Err(Error::InvalidFile {
            path: path.to_path_buf(),
            message: "is not a directory (expected an HF-style model directory)".into(),
        });
    }
    let mut missing = Vec::new();
    for name in ["config.json", "tokenizer.json"] {
        if !path.join(name).is_file() {
            missing.push(name.to_string());
        }
    }
    let mut safetensors = Vec::new();
    for entry in fs::read_dir(path).ctx(|| format!("listing {}", path.display()))? {
        let entry = entry.ctx(|| format!("listing {}", path.display()))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "safetensors") && p.is_file() {
            safetensors.push(p);
        }
    }
    if safetensors.is_empty() {
        missing.push("*.safetensors".to_string());
    }
    if !missing.is_empty() {
        return Err(Error::IncompleteModelDir {
            dir: path.to_path_buf(),
            missing,
        });
    }
    for name in ["config.json", "tokenizer.json"] {
        let p = path.join(name);
        let text = fs::read_to_string(&p).ctx(|| format!("reading {}", p.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).ctx(|| format!("parsing {}", p.display()))?;
        if !value.is_object() {
            return Err(Error::InvalidFile {
                path: p,
                message: "is not a JSON object".into(),
            });
        }
    }
    safetensors.sort();
    for p in safetensors {
        check_safetensors(&p)?;
    }
    Ok(())
}

/// Reads a safetensors header and checks the file is as long as the header says.
fn check_safetensors(path: &Path) -> Result<()> {
    let bad = |message: String| Error::InvalidFile {
        path: path.to_path_buf(),
        message,
    };
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| bad("too short for a safetensors header".into()))?;
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 || 8 + n > len {
        return Err(bad(format!(
            "bad safetensors header length {n} (file is {len} bytes)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .ctx(|| format!("reading {}", path.display()))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("bad safetensors header: {e}")))?;
    let mut end = 0u64;
    let mut tensors = 0;
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        tensors += 1;
        let e = info
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(|v| v.as_u64())
            .ok_or_else(|| bad(format!("tensor `{name}` has no data_offsets")))?;
        end = end.max(e);
    }
    if tensors == 0 {
        return Err(bad("holds no tensors".into()));
    }
    if 8 + n + end != len {
        return Err(bad(format!(
            "is {len} bytes but its header describes {} (truncated or partly written?)",
            8 + n + end
        )));
    }
    Ok(())
}
