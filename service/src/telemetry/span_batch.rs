//! The span processor of the three services: finished, sampled spans are queued, and a
//! task on the Tokio runtime sends them in batches through [`OtlpSpanExporter`], never on
//! a request's path.
//!
//! The SDK's batch processor sends every span to its task over a channel, so each span
//! wakes the task and is moved several times: about 2,000 instructions a span under
//! callgrind (`docs/benchmarks.md`). Here a span is encoded, as it ends, into the buffer of
//! the batch being filled (under a lock, [`span_encode::EncodedSpans`]), and the task is
//! woken only when a batch is full (or by its timer, or a flush). The standard variables
//! tune it as they tune the SDK's:
//! - `OTEL_BSP_SCHEDULE_DELAY`: the longest a span waits for its batch, 5,000 ms;
//! - `OTEL_BSP_MAX_QUEUE_SIZE`: spans queued at most, 2,048; past it spans are dropped
//!   (logged once);
//! - `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per export, 512 (at most the queue size);
//! - `OTEL_BSP_EXPORT_TIMEOUT`: the longest one export may take, 30,000 ms.
//!
//! One export runs at a time (the SDK's default for `OTEL_BSP_MAX_CONCURRENT_EXPORTS`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use tokio::sync::Notify;

use super::span_encode::{self, EncodedSpans};
use super::span_export::OtlpSpanExporter;

/// How spans are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Batching {
    pub delay: Duration,
    pub max_queue: usize,
    pub max_batch: usize,
    pub timeout: Duration,
}

impl Batching {
    pub(super) fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let number = |k: &str, default: u64| {
            var(k)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        let max_queue = usize::try_from(number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)).unwrap_or(2048);
        let max_batch = usize::try_from(number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))
            .unwrap_or(512)
            .min(max_queue);
        Self {
            delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5_000)),
            max_queue,
            max_batch,
            timeout: Duration::from_millis(number("OTEL_BSP_EXPORT_TIMEOUT", 30_000)),
        }
    }
}

/// Queues finished spans for the export task. A clone queues onto the same task.
#[derive(Debug, Clone)]
pub(super) struct SpanBatcher {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    batching: Batching,
    queue: Mutex<Queue>,
    /// Wakes the task: a batch is full, a flush is asked for, or it is to stop.
    wake: Notify,
    /// Flushes waiting for the task to have sent every span queued before them.
    flushes: Mutex<Vec<std::sync::mpsc::SyncSender<()>>>,
    stopping: AtomicBool,
    /// Whether the task still runs: not once it stopped, or its runtime dropped it.
    running: AtomicBool,
    /// Whether the last flush timed out (an export hangs): shutdown then does not wait
    /// for it again.
    stuck: AtomicBool,
    dropped: AtomicU64,
    exporter: OtlpSpanExporter,
}

impl SpanBatcher {
    /// Starts the export task (must run inside a Tokio runtime).
    pub(super) fn start(exporter: OtlpSpanExporter, batching: Batching) -> Self {
        let shared = Arc::new(Shared {
            batching,
            queue: Mutex::new(Queue {
                full: VecDeque::new(),
                filling: EncodedSpans::with_capacity(first_batch_room(batching.max_batch)),
            }),
            wake: Notify::new(),
            flushes: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            stuck: AtomicBool::new(false),
            running: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            exporter,
        });
        tokio::spawn(run(shared.clone()));
        Self { shared }
    }

    /// The spans queued and not yet taken by the task, decoded.
    #[cfg(test)]
    pub(super) fn take_queued(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        let mut queue = lock(&self.shared.queue);
        let mut spans = Vec::new();
        while let Some(batch) = next_batch(&mut queue, true) {
            let mut out = Vec::new();
            span_encode::export_request(&Default::default(), &batch, &mut out);
            let request = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
            for r in request.resource_spans {
                for s in r.scope_spans {
                    spans.extend(s.spans);
                }
            }
        }
        spans
    }

    /// Queues a finished, sampled span of `scope`, which `encode` writes (a
    /// `ScopeSpans.spans` entry); drops it when the queue is full.
    pub(super) fn push(&self, scope: &InstrumentationScope, encode: impl FnOnce(&mut Vec<u8>)) {
        let batching = &self.shared.batching;
        let full = {
            let mut queue = lock(&self.shared.queue);
            if queue.len(batching.max_batch) >= batching.max_queue {
                drop(queue);
                if self.shared.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        max_queue = batching.max_queue,
                        "span queue full: spans are dropped until the collector keeps up \
                         (OTEL_BSP_MAX_QUEUE_SIZE)"
                    );
                }
                return;
            }
            queue.push(scope, encode, batching.max_batch)
        };
        if full {
            self.shared.wake.notify_one();
        }
    }

    /// Asks the task to send everything queued, and waits for it (at most `timeout`).
    /// Called from outside the runtime's tasks (a binary's `main` at shutdown); it blocks
    /// its thread.
    fn flush_and_wait(&self, timeout: Duration) -> OTelSdkResult {
        if !self.shared.running.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        lock(&self.shared.flushes).push(done);
        self.shared.wake.notify_one();
        // The task may have ended just before the flush was queued: nothing would answer it.
        if !self.shared.running.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let done = wait.recv_timeout(timeout).is_ok();
        self.shared.stuck.store(!done, Ordering::Relaxed);
        if done {
            Ok(())
        } else {
            Err(OTelSdkError::Timeout(timeout))
        }
    }
}

impl SpanProcessor for SpanBatcher {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            // Encoded before the queue is locked: an SDK span's events and links take more
            // work than a request's spans, which are encoded into the batch directly.
            let mut encoded = Vec::new();
            span_encode::put_span_data(&span, &mut encoded);
            self.push(&span.instrumentation_scope, |out| {
                out.extend_from_slice(&encoded);
            });
        }
    }

    /// Waits at most 5 s (or the export timeout, when shorter): a flush runs at shutdown,
    /// which a collector that hangs must not hold up for long.
    fn force_flush(&self) -> OTelSdkResult {
        self.flush_and_wait(self.shared.batching.timeout.min(Duration::from_secs(5)))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.shared.stopping.store(true, Ordering::Relaxed);
        // A service flushes before it drops its tracer provider (which shuts this down):
        // after a flush that timed out, waiting again would only add to the stop.
        let flushed = if self.shared.stuck.load(Ordering::Relaxed) {
            Err(OTelSdkError::Timeout(Duration::ZERO))
        } else {
            self.flush_and_wait(timeout)
        };
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "spans dropped on a full queue since startup");
        }
        flushed
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared.exporter.set_resource(resource);
    }
}

/// The export task: wakes on a full batch, a flush, or its timer (every
/// `OTEL_BSP_SCHEDULE_DELAY`, not put off by full batches: no span waits longer), and sends
/// what is queued a batch at a time, oldest first.
async fn run(shared: Arc<Shared>) {
    /// Marks the task stopped however it ends (returned, or dropped with its runtime).
    struct Running(Arc<Shared>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.running.store(false, Ordering::Release);
            // A flush waiting now would wait for nothing.
            lock(&self.0.flushes).clear();
        }
    }
    let _running = Running(shared.clone());
    let mut due = tokio::time::Instant::now() + shared.batching.delay;
    loop {
        // Woken for a full batch: send full batches only (what is left waits for the next
        // one, or for the timer). On the timer, a flush or at the end: send everything.
        let timer = tokio::select! {
            () = shared.wake.notified() => false,
            () = tokio::time::sleep_until(due) => true,
        };
        if timer {
            due = tokio::time::Instant::now() + shared.batching.delay;
        }
        // The flushes asked for before this pass are answered after it.
        let flushes = std::mem::take(&mut *lock(&shared.flushes));
        let stopping = shared.stopping.load(Ordering::Relaxed);
        let everything = timer || stopping || !flushes.is_empty();
        loop {
            let Some(batch) = next_batch(&mut lock(&shared.queue), everything) else {
                break;
            };
            // A failure is the exporter's to log; the batch is dropped either way.
            let _ =
                tokio::time::timeout(shared.batching.timeout, shared.exporter.export(batch)).await;
        }
        for f in flushes {
            let _ = f.try_send(());
        }
        if stopping {
            return;
        }
    }
}

/// The most room a batch is given ahead of its spans: a batch of large spans (captured
/// message content) makes the next one no larger up front.
const MAX_ROOM: usize = 1 << 20;

/// The room the first batch is given (the ones after it, the room the one before took, up
/// to [`MAX_ROOM`]): a span takes a few hundred bytes (a request's route span and attempt,
/// up to a kilobyte).
fn first_batch_room(max_batch: usize) -> usize {
    max_batch.saturating_mul(1024).min(MAX_ROOM)
}

/// The spans queued: full batches, oldest first, and the batch being filled.
#[derive(Debug, Default)]
struct Queue {
    full: VecDeque<EncodedSpans>,
    filling: EncodedSpans,
}

impl Queue {
    /// Spans queued, `max_batch` in each full batch.
    fn len(&self, max_batch: usize) -> usize {
        self.full.len() * max_batch + self.filling.len()
    }

    /// Adds a span to the batch being filled; whether that filled it (it is then queued
    /// whole, and the next one is given the room it took).
    fn push(
        &mut self,
        scope: &InstrumentationScope,
        encode: impl FnOnce(&mut Vec<u8>),
        max_batch: usize,
    ) -> bool {
        self.filling.push(scope, encode);
        let full = self.filling.len() >= max_batch;
        if full {
            let batch = self.take_filling();
            self.full.push_back(batch);
        }
        full
    }

    fn take_filling(&mut self) -> EncodedSpans {
        let room = self.filling.bytes().min(MAX_ROOM);
        std::mem::replace(&mut self.filling, EncodedSpans::with_capacity(room))
    }
}

/// The oldest full batch; when `everything` is to go and none is full, the one being
/// filled (the next one is given the room it took). None when nothing is to go.
fn next_batch(queue: &mut Queue, everything: bool) -> Option<EncodedSpans> {
    if let Some(full) = queue.full.pop_front() {
        return Some(full);
    }
    (everything && !queue.filling.is_empty()).then(|| queue.take_filling())
}

/// A lock that outlives a panic elsewhere: the queue holds plain data.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_go_oldest_first_and_the_next_is_given_the_room_the_last_took() {
        let scope = InstrumentationScope::builder("routeiq").build();
        let span = |n: u8| move |out: &mut Vec<u8>| out.extend_from_slice(&[n; 3]);
        let mut queue = Queue::default();
        let filled: Vec<bool> = (0..5).map(|n| queue.push(&scope, span(n), 2)).collect();
        assert_eq!(filled, [false, true, false, true, false]);
        assert_eq!(queue.len(2), 5);
        let bytes = |b: &EncodedSpans| b.raw().0;
        // Woken for a full batch: full batches only, in order.
        let first = next_batch(&mut queue, false).unwrap();
        assert_eq!(bytes(&first), [0, 0, 0, 1, 1, 1]);
        assert_eq!(
            bytes(&next_batch(&mut queue, false).unwrap()),
            [2, 2, 2, 3, 3, 3]
        );
        assert!(
            next_batch(&mut queue, false).is_none(),
            "one waits for its batch"
        );
        // The timer, a flush or the end: the rest goes too.
        assert_eq!(bytes(&next_batch(&mut queue, true).unwrap()), [4, 4, 4]);
        assert!(next_batch(&mut queue, true).is_none());
        queue.push(&scope, span(5), 2);
        assert!(queue.filling.raw().1 >= 3, "the room the last batch took");
        assert_eq!(queue.len(2), 1);

        // A batch of large spans makes the next one no larger than MAX_ROOM up front.
        let mut queue = Queue::default();
        assert!(queue.push(&scope, |out| out.resize(2 * MAX_ROOM, 7), 1));
        queue.push(&scope, span(8), 1);
        assert_eq!(
            next_batch(&mut queue, false).unwrap().raw().0.len(),
            2 * MAX_ROOM
        );
        let (bytes, room) = next_batch(&mut queue, false).unwrap().raw();
        assert_eq!((bytes, room), (vec![8; 3], MAX_ROOM));
    }

    #[test]
    fn batching_reads_the_standard_variables() {
        let none = Batching::from_vars(|_| None);
        assert_eq!(
            none,
            Batching {
                delay: Duration::from_secs(5),
                max_queue: 2048,
                max_batch: 512,
                timeout: Duration::from_secs(30),
            }
        );
        let set = Batching::from_vars(|k| {
            Some(
                match k {
                    "OTEL_BSP_SCHEDULE_DELAY" => "250",
                    "OTEL_BSP_MAX_QUEUE_SIZE" => "100",
                    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" => "512",
                    "OTEL_BSP_EXPORT_TIMEOUT" => "nonsense",
                    _ => return None,
                }
                .to_owned(),
            )
        });
        assert_eq!(set.delay, Duration::from_millis(250));
        assert_eq!(set.max_queue, 100);
        assert_eq!(set.max_batch, 100, "a batch is at most the queue");
        assert_eq!(set.timeout, Duration::from_secs(30));
    }
}
