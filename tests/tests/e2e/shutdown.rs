//! Graceful shutdown: SIGTERM stops accepting but lets in-flight requests
//! finish, and their events are written.

use std::time::{Duration, Instant};

use flywheel_tests::*;

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let mock = start_mock(&[]);
    let cfg = format!(
        "{}\n[[routes]]\nname = \"chat\"\n[[routes.variants]]\nname = \"v\"\ntargets = [{{ provider = \"slow\", model = \"m\" }}]\n",
        mock_provider("slow", &mock, &[("x-mock-latency-ms", "1500")])
    );
    let mut gw = start_gateway(&cfg);
    let url = gw.url("/v1/chat/completions");
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .bearer_auth(KEY)
            .json(&chat("chat", "slow one"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the in-flight request was not drained"
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "gateway did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(
        events(&gw, 1).len(),
        1,
        "the drained request's event was lost"
    );
}
