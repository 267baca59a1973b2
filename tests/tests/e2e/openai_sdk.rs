//! Compatibility with the official `openai` Python SDK, unchanged: chat,
//! streaming with usage, and `json_schema` structured output (also through the SDK's
//! `parse()` helper with a Pydantic model).
//!
//! The interpreter is `$FLYWHEEL_PYTHON` (the test script points it at a
//! virtualenv with `openai` installed), else `python3`; a missing SDK fails
//! the test rather than skipping it.

use std::process::Command;

use flywheel_tests::*;

#[tokio::test]
async fn official_openai_sdk_works_unchanged() {
    let mock = start_mock(&[]);
    let cfg = format!(
        "{}\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"mock\", model = \"m\" }}]\n",
        mock_provider("mock", &mock, &[])
    );
    let gw = start_gateway(&cfg);
    let python = std::env::var("FLYWHEEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = manifest_dir().join("python/openai_compat.py");
    let out = Command::new(python)
        .arg(script)
        .env("OPENAI_BASE_URL", gw.url("/v1"))
        .env("OPENAI_API_KEY", KEY)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("ALL OK"), "{stdout}");
}
