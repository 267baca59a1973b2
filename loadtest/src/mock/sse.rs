//! Server-sent-event bodies with pacing and mid-stream faults.
//!
//! A stream is rendered up front into frames (head, one per content step,
//! tail) and then replayed on a schedule. Rendering first keeps the timed part
//! trivial and makes a fault-free, unpaced stream a single write.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{self, BoxStream};
use http_body::Frame;
use http_body_util::{Either, Full, StreamBody};
use serde::Serialize;
use tokio::time::Instant;

/// Returned by the body stream to make hyper abort the connection: the client
/// sees a truncated body (no terminating chunk, no `[DONE]`), like a provider
/// dropping a stream mid-way.
#[derive(Debug, thiserror::Error)]
#[error("mock injected connection cut")]
pub struct InjectedCut;

pub type FrameStream = BoxStream<'static, Result<Frame<Bytes>, InjectedCut>>;
/// Every response of the mock: a complete buffer, or a timed SSE stream.
pub type MockBody = Either<Full<Bytes>, StreamBody<FrameStream>>;

pub fn full(bytes: impl Into<Bytes>) -> MockBody {
    Either::Left(Full::new(bytes.into()))
}

/// The line sent by `malformed-after`.
pub const MALFORMED: &[u8] = b"data: {this is not json\n\n";
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Appends `data: <json>\n\n`.
pub fn push_event(buf: &mut BytesMut, value: &impl Serialize) {
    buf.put_slice(b"data: ");
    // Serialising our own structs into memory cannot fail; were it to, the
    // event is an empty object and the client sees a malformed chunk.
    if serde_json::to_writer((&mut *buf).writer(), value).is_err() {
        buf.put_slice(b"{}");
    }
    buf.put_slice(b"\n\n");
}

/// Frames of one stream. `steps` are the content chunks that timing and the
/// `*-after N` faults count.
pub struct SsePlan {
    pub head: Bytes,
    pub steps: Vec<Bytes>,
    pub tail: Bytes,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Delay before the head and first content step.
    pub ttft: Duration,
    /// Interval between content steps after the first.
    pub per_token: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub cut_after: Option<u64>,
    pub stall_after: Option<u64>,
    pub stall: Duration,
    pub malformed_after: Option<u64>,
}

enum Phase {
    Head,
    Step(usize),
    Tail,
    Done,
}

struct Replay {
    plan: SsePlan,
    timing: Timing,
    faults: Faults,
    phase: Phase,
    /// When the first content step went out; pacing is relative to it so
    /// timer jitter does not accumulate.
    first_at: Instant,
    stalled: bool,
}

impl SsePlan {
    pub fn into_body(self, timing: Timing, faults: Option<Faults>) -> MockBody {
        let unpaced = timing.ttft.is_zero() && timing.per_token.is_none();
        if unpaced && faults.is_none() {
            let len = self.head.len()
                + self.steps.iter().map(Bytes::len).sum::<usize>()
                + self.tail.len();
            let mut buf = BytesMut::with_capacity(len);
            buf.put_slice(&self.head);
            for s in &self.steps {
                buf.put_slice(s);
            }
            buf.put_slice(&self.tail);
            // Still a streamed body: clients of an SSE endpoint expect
            // chunked transfer, not a Content-Length.
            return Either::Right(StreamBody::new(Box::pin(stream::once(async move {
                Ok(Frame::data(buf.freeze()))
            }))));
        }
        let replay = Replay {
            plan: self,
            timing,
            faults: faults.unwrap_or_default(),
            phase: Phase::Head,
            first_at: Instant::now(),
            stalled: false,
        };
        Either::Right(StreamBody::new(Box::pin(stream::unfold(
            replay,
            |mut r| async move {
                let item = r.next().await?;
                Some((item, r))
            },
        ))))
    }
}

impl Replay {
    async fn next(&mut self) -> Option<Result<Frame<Bytes>, InjectedCut>> {
        loop {
            match self.phase {
                Phase::Head => {
                    if !self.timing.ttft.is_zero() {
                        tokio::time::sleep(self.timing.ttft).await;
                    }
                    self.first_at = Instant::now();
                    self.phase = Phase::Step(0);
                    // An empty data frame could read as end-of-body to some
                    // encoders; legacy completions have no head at all.
                    if !self.plan.head.is_empty() {
                        return Some(Ok(Frame::data(self.plan.head.clone())));
                    }
                }
                Phase::Step(i) => {
                    let pos = Some(i as u64);
                    if self.faults.cut_after == pos {
                        // Let hyper flush what was already sent before the
                        // error aborts the connection.
                        tokio::task::yield_now().await;
                        self.phase = Phase::Done;
                        return Some(Err(InjectedCut));
                    }
                    if self.faults.malformed_after == pos {
                        self.phase = Phase::Done;
                        return Some(Ok(Frame::data(Bytes::from_static(MALFORMED))));
                    }
                    if self.faults.stall_after == pos && !self.stalled {
                        self.stalled = true;
                        tokio::time::sleep(self.faults.stall).await;
                        // Resume at the normal pace instead of bursting.
                        self.first_at += self.faults.stall;
                    }
                    let Some(step) = self.plan.steps.get(i) else {
                        self.phase = Phase::Tail;
                        continue;
                    };
                    if let (Some(per), true) = (self.timing.per_token, i > 0) {
                        tokio::time::sleep_until(self.first_at + per * i as u32).await;
                    }
                    self.phase = Phase::Step(i + 1);
                    return Some(Ok(Frame::data(step.clone())));
                }
                Phase::Tail => {
                    self.phase = Phase::Done;
                    return Some(Ok(Frame::data(self.plan.tail.clone())));
                }
                Phase::Done => return None,
            }
        }
    }
}
