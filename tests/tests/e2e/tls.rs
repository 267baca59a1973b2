//! TLS between Flywheel's own services: an engine started with
//! `--tls-cert` is reached by the gateway through the engine's private CA
//! (`ca_file`), and a provider that does not trust that CA gets no answer
//! from it. (The OpenAI SDK over TLS to the gateway: `openai_sdk`.)

use flywheel_tests::*;
use serde_json::{json, Value};

#[tokio::test]
async fn the_gateway_reaches_a_tls_engine_only_through_its_private_ca() {
    let testdata = manifest_dir().join("../listener/testdata");
    let file = |name: &str| testdata.join(name).display().to_string();
    let engine = start_engine_with(&[
        "--tls-cert",
        &file("server.pem"),
        "--tls-key",
        &file("server.key"),
    ]);
    let provider = |name: &str, ca: &str| {
        format!(
            "[providers.{name}]\nbase_url = \"https://{}/v1\"\n{ca}\n",
            engine.addr
        )
    };
    let route = |name: &str, provider: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\n{ENGINE_RETRY}[[routes.variants]]\nname = \"v\"\n\
             targets = [{{ provider = \"{provider}\", model = \"base\" }}]\n"
        )
    };
    let gw = start_gateway(&format!(
        "{}{}{}{}",
        provider("engine", &format!("ca_file = \"{}\"", file("ca.pem"))),
        provider("untrusted", ""),
        route("chat", "engine"),
        route("untrusted", "untrusted"),
    ));
    let ask = |model: &'static str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"model": model, "temperature": 0, "max_tokens": 8,
                          "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
            .send()
    };

    let r = ask("chat").await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text}");

    // Without the CA the engine's certificate is not trusted: no answer,
    // and the tenant is not told the internal details.
    let r = ask("untrusted").await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert!((502..=504).contains(&status), "{status} {body}");
    assert!(!body.contains("127.0.0.1"), "{body}");
}
