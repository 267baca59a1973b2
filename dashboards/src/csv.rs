//! CSV export: one array of an answer (`format=csv&table=NAME`) as RFC 4180
//! CSV, its header being the keys of the array's objects.
//!
//! A cell is the JSON value written plainly: strings as they are, numbers
//! as JSON writes them, null as an empty cell, arrays and objects as their
//! JSON text. A cell holding a comma, a quote or a line break is quoted,
//! quotes doubled.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsvError {
    #[error("no table {0:?} in this answer; tables: {1}")]
    NoTable(String, String),
}

/// The array `table` of `answer` as CSV (a header line, then a line per
/// element; `\r\n` line ends, as RFC 4180 says).
pub fn table_csv(answer: &Value, table: &str) -> Result<String, CsvError> {
    let rows = match answer.get(table) {
        Some(Value::Array(rows)) => rows,
        _ => {
            let tables: Vec<&str> = answer
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, v)| v.is_array())
                        .map(|(k, _)| k.as_str())
                        .collect()
                })
                .unwrap_or_default();
            return Err(CsvError::NoTable(table.to_owned(), tables.join(", ")));
        }
    };
    // The union of the keys, in order of first appearance.
    let mut header: Vec<&str> = Vec::new();
    for row in rows {
        if let Some(o) = row.as_object() {
            for k in o.keys() {
                if !header.contains(&k.as_str()) {
                    header.push(k);
                }
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = String>| {
        let mut first = true;
        for c in cells {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&quote(&c));
        }
        out.push_str("\r\n");
    };
    line(&mut out, &mut header.iter().map(|h| (*h).to_owned()));
    for row in rows {
        line(
            &mut out,
            &mut header
                .iter()
                .map(|h| cell(row.get(*h).unwrap_or(&Value::Null))),
        );
    }
    Ok(out)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn quotes_cells_that_need_it() {
        let answer = json!({"rows": [
            {"a": "plain", "b": 1.5, "c": null},
            {"a": "with, comma", "b": "say \"hi\"", "c": "two\nlines"},
            {"a": "x", "d": [1, 2]}
        ], "n": 3});
        let csv = table_csv(&answer, "rows").unwrap();
        assert_eq!(
            csv,
            "a,b,c,d\r\nplain,1.5,,\r\n\"with, comma\",\"say \"\"hi\"\"\",\"two\nlines\",\r\nx,,,\"[1,2]\"\r\n"
        );
    }

    #[test]
    fn names_the_tables_when_one_is_missing() {
        let e = table_csv(&json!({"series": [], "n": 1}), "nope").unwrap_err();
        assert_eq!(e, CsvError::NoTable("nope".into(), "series".into()));
    }
}
