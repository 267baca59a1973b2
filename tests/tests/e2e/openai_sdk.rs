//! Compatibility with the official `openai` Python SDK, unchanged: chat,
//! streaming with usage, and `json_schema` structured output (also through the SDK's
//! `parse()` helper with a Pydantic model).
//!
//! The same script runs over HTTPS, as a client with a private CA would.
//!
//! The interpreter is `$FLYWHEEL_PYTHON` (the test script points it at a
//! virtualenv with `openai` installed), else `python3`; a missing SDK fails
//! the test rather than skipping it.

use std::process::Command;

use flywheel_tests::*;

/// One route, `chat`, on the mock.
fn chat_route(mock: &Proc) -> String {
    format!(
        "{}\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"mock\", model = \"m\" }}]\n",
        mock_provider("mock", mock, &[])
    )
}

/// Runs `python/openai_compat.py` against `base_url`; its stdout.
fn run_sdk(base_url: &str, env: &[(&str, &str)]) -> String {
    let python = std::env::var("FLYWHEEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = manifest_dir().join("python/openai_compat.py");
    let out = Command::new(python)
        .arg(script)
        .env("OPENAI_BASE_URL", base_url)
        .env("OPENAI_API_KEY", KEY)
        .envs(env.iter().copied())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("ALL OK"), "{stdout}");
    stdout.into_owned()
}

#[tokio::test]
async fn official_openai_sdk_works_unchanged() {
    let mock = start_mock(&[]);
    let gw = start_gateway(&chat_route(&mock));
    run_sdk(&gw.url("/v1"), &[]);
}

#[tokio::test]
async fn the_openai_sdk_connects_over_tls_and_refuses_a_certificate_it_does_not_trust() {
    let mock = start_mock(&[]);
    let testdata = manifest_dir().join("../listener/testdata");
    let dir = scratch_dir("gateway-tls");
    let config = base_config(&dir.join("events.jsonl")).replacen(
        "[server]\n",
        &format!(
            "[server]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            testdata.join("server.pem").display(),
            testdata.join("server.key").display()
        ),
        1,
    );
    let gw = start_gateway_with(&dir, &format!("{config}\n{}", chat_route(&mock)));
    let https = gw.url("/v1").replacen("http://", "https://", 1);
    let ca = testdata.join("ca.pem");
    let stdout = run_sdk(&https, &[("FLYWHEEL_CA_FILE", ca.to_str().unwrap())]);
    assert!(stdout.contains("untrusted certificate refused"), "{stdout}");
    // The TLS port speaks no plain HTTP.
    let plain = client()
        .get(gw.url("/health"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
}
