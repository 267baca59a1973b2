//! JSONL in the OpenAI chat format that OpenAI RFT and Bedrock RFT accept:
//! one `{"messages": [...], "reference_answer": ..., ...extra}` per line.
//! Reading never skips a bad line silently: every one is reported with its
//! line number, and the caller decides whether any error is fatal.
//!
//! Files ([`read_file`], [`write_file`]) may be sealed at rest with the
//! log's keys (`flywheel_feedback::sealed_file`): they hold whole prompts
//! and answers from captured traffic.

use std::{
    io::{BufRead, Write},
    path::Path,
};

use flywheel_feedback::{
    sealed_file::{self, SealedFileError},
    wal::Keyring,
};

use crate::item::Item;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    /// 1-based, as editors show it.
    pub line: usize,
    pub reason: String,
}

/// What reading a file gave: the good items and every bad line.
#[derive(Debug, Default)]
pub struct Read {
    pub items: Vec<Item>,
    pub errors: Vec<LineError>,
    /// Blank lines, which are allowed and not counted as items.
    pub blank: usize,
}

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

pub fn read(input: impl BufRead) -> std::io::Result<Read> {
    let mut out = Read::default();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            out.blank += 1;
            continue;
        }
        match parse_line(&line) {
            Ok(item) => out.items.push(item),
            Err(reason) => out.errors.push(LineError {
                line: i + 1,
                reason,
            }),
        }
    }
    Ok(out)
}

/// One line, checked beyond what serde checks: a usable prompt needs at
/// least one message, known roles and a user or system turn to answer.
pub fn parse_line(line: &str) -> Result<Item, String> {
    let item: Item = serde_json::from_str(line).map_err(|e| format!("not a dataset row: {e}"))?;
    if item.messages.is_empty() {
        return Err("`messages` is empty".into());
    }
    for (i, m) in item.messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(format!(
                "messages[{i}].role is {:?}; expected one of {}",
                m.role,
                ROLES.join(", ")
            ));
        }
        let has_content = !m.content.is_null() || m.extra.contains_key("tool_calls");
        if !has_content {
            return Err(format!("messages[{i}] has no content"));
        }
    }
    if item.prompt().is_empty() {
        return Err("no prompt: the only message is an assistant answer".into());
    }
    Ok(item)
}

/// A dataset file, plain or sealed (a sealed one needs `keys`).
pub fn read_file(path: &Path, keys: Option<&Keyring>) -> Result<Read, SealedFileError> {
    let bytes = sealed_file::read(path, keys)?;
    read(&bytes[..]).map_err(|source| SealedFileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `items` to `path`, sealed when `keys` is given; the number written.
pub fn write_file<'a>(
    path: &Path,
    items: impl IntoIterator<Item = &'a Item>,
    keys: Option<&Keyring>,
) -> Result<usize, SealedFileError> {
    let mut plain = Vec::new();
    let n = write(&mut plain, items).map_err(|source| SealedFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    sealed_file::write(path, &plain, keys)?;
    Ok(n)
}

pub fn write<'a>(
    mut out: impl Write,
    items: impl IntoIterator<Item = &'a Item>,
) -> std::io::Result<usize> {
    let mut n = 0;
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"}],"reference_answer":{"x":1},"id":"a","task":"t"}"#;

    #[test]
    fn round_trip_is_lossless() {
        let input = format!("{GOOD}\n\n{}\n", GOOD.replace("\"a\"", "\"b\""));
        let read = read(input.as_bytes()).unwrap();
        assert!(read.errors.is_empty(), "{:?}", read.errors);
        assert_eq!((read.items.len(), read.blank), (2, 1));
        let mut buf = Vec::new();
        assert_eq!(write(&mut buf, &read.items).unwrap(), 2);
        let again = super::read(buf.as_slice()).unwrap();
        assert_eq!(again.items, read.items);
        let first: serde_json::Value =
            serde_json::from_slice(buf.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(
            first,
            serde_json::from_str::<serde_json::Value>(GOOD).unwrap()
        );
    }

    #[test]
    fn a_file_written_with_a_key_reads_back_only_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        let items = read(GOOD.as_bytes()).unwrap().items;
        let keys = Keyring::from_hex(&"ab".repeat(32), &[]).unwrap();
        assert_eq!(write_file(&path, &items, Some(&keys)).unwrap(), 1);
        let on_disk = std::fs::read(&path).unwrap();
        assert!(!String::from_utf8_lossy(&on_disk).contains("reference_answer"));
        let refused = read_file(&path, None).unwrap_err();
        assert!(
            matches!(refused, SealedFileError::NeedsKey { .. }),
            "{refused}"
        );
        assert_eq!(read_file(&path, Some(&keys)).unwrap().items, items);
        // Plain files read with or without keys.
        write_file(&path, &items, None).unwrap();
        assert_eq!(read_file(&path, Some(&keys)).unwrap().items, items);
    }

    #[test]
    fn bad_lines_are_reported_with_their_numbers() {
        let input = [
            GOOD,
            "{not json",
            r#"{"reference_answer":1}"#,
            r#"{"messages":[]}"#,
            r#"{"messages":[{"role":"robot","content":"x"}]}"#,
            r#"{"messages":[{"role":"assistant","content":"only an answer"}]}"#,
            GOOD,
        ]
        .join("\n");
        let read = read(input.as_bytes()).unwrap();
        assert_eq!(read.items.len(), 2);
        let lines: Vec<usize> = read.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6]);
        assert!(
            read.errors[1].reason.contains("messages"),
            "{}",
            read.errors[1]
        );
        assert!(
            read.errors[3].reason.contains("robot"),
            "{}",
            read.errors[3]
        );
        assert!(read.errors[0].to_string().starts_with("line 2: "));
    }
}
