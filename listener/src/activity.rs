//! Requests in flight per connection, so that the accept loop can close a
//! connection that has been idle (no request, no response body) too long.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use http_body::Frame;
use hyper::body::Incoming;
use parking_lot::Mutex;
use tokio::time::Instant;

/// Requests of one connection: how many are in flight (until their
/// response body ends), whether any started, and since when it is idle.
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Since when nothing is in flight, and whether a request ever was:
    /// until the first one, the connection is held to the header timeout
    /// from when it opened.
    idle_since: Mutex<(Instant, bool)>,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new((Instant::now(), false)),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for its
    /// limit: `first` from when it opened until a request started,
    /// `idle` after that.
    pub(crate) async fn idle_past(&self, (first, idle): (Duration, Duration)) {
        loop {
            let (deadline, limit, busy) = {
                // Read together: a request ending updates both under the lock.
                let idle_since = self.idle_since.lock();
                let (since, served) = *idle_since;
                let limit = if served { idle } else { first };
                (
                    since + limit,
                    limit,
                    self.in_flight.load(Ordering::SeqCst) > 0,
                )
            };
            if !busy && Instant::now() >= deadline {
                return;
            }
            // Busy or not yet due: look again at the deadline (or, while a
            // request is in flight, a limit later).
            let next = if Instant::now() >= deadline {
                Instant::now() + limit
            } else {
                deadline
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// One request in flight; its drop (the response body ended or was
/// dropped) makes the connection idle from then if it was the last.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut idle_since = self.0.idle_since.lock();
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *idle_since = (Instant::now(), true);
        } else {
            idle_since.1 = true;
        }
    }
}

/// The app, counting each request in flight on its connection.
#[derive(Clone)]
pub(crate) struct Tracked {
    app: axum::Router,
    activity: Arc<Activity>,
}

impl Tracked {
    pub(crate) fn new(app: axum::Router, activity: Arc<Activity>) -> Self {
        Self { app, activity }
    }
}

impl tower::Service<http::Request<Incoming>> for Tracked {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let app = self.app.clone();
        Box::pin(async move {
            let response = tower::ServiceExt::oneshot(app, request).await?;
            Ok(response.map(|body| {
                Body::new(Counted {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that holds its request's [`InFlight`] until it ends.
struct Counted {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
