//! A provider with a pool of replicas: episodes stick to one replica
//! (consistent hashing), a dead replica is taken out and requests still
//! succeed, and it is brought back once its health check passes.

use std::time::Duration;

use flywheel_tests::*;

fn config(replicas: &[&Proc]) -> String {
    let list: Vec<String> = replicas.iter().map(|r| format!("\"{}\"", r.addr)).collect();
    format!(
        "[providers.engine]\nbase_url = \"http://engine/v1\"\nreplicas = [{}]\nhealth_check_ms = 200\n\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"engine\", model = \"m\" }}]\n",
        list.join(", ")
    )
}

async fn ask(gw: &Proc, episode: &str) -> u16 {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-flywheel-episode-id", episode)
        .json(&chat("chat", "hi"))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

async fn requests(replica: &Proc) -> u64 {
    mock_stats(replica).await["requests"].as_u64().unwrap()
}

#[tokio::test]
async fn episodes_stick_and_dead_replicas_are_routed_around() {
    let a = start_mock(&[]);
    let mut b = start_mock(&[]);
    let gw = start_gateway(&config(&[&a, &b]));

    // Each episode lands on one replica, every time.
    for e in 0..20 {
        let episode = format!("episode-{e}");
        let (before_a, before_b) = (requests(&a).await, requests(&b).await);
        for _ in 0..3 {
            assert_eq!(ask(&gw, &episode).await, 200);
        }
        let (da, db) = (requests(&a).await - before_a, requests(&b).await - before_b);
        assert!(
            (da, db) == (3, 0) || (da, db) == (0, 3),
            "episode {episode} split: {da}/{db}"
        );
    }
    // Both replicas got some episodes.
    assert!(requests(&a).await > 0 && requests(&b).await > 0);

    // Kill b: every episode is still answered (by a).
    let b_addr = b.addr.clone();
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    for e in 0..20 {
        assert_eq!(
            ask(&gw, &format!("episode-{e}")).await,
            200,
            "episode-{e} failed with a replica down"
        );
    }

    // b comes back on the same address: once its health check passes, its
    // episodes return to it.
    b = spawn_listening(
        {
            let mut cmd = std::process::Command::new(bin("flywheel-mock"));
            cmd.args(["--listen", &b_addr]);
            cmd
        },
        scratch_dir("mock"),
    );
    let back = eventually(Duration::from_secs(10), || async {
        for e in 0..20 {
            ask(&gw, &format!("episode-{e}")).await;
        }
        requests(&b).await > 0
    })
    .await;
    assert!(back, "the replica was not brought back");
}
