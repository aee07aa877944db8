//! How many DynamoDB calls one `ferry` command has under way at once.
//!
//! `ferry run` sets up every batch in one process, each Replicate all its
//! partitions at once (a lease, a producer record, a look at the offset
//! map each): unbounded, that was one HTTP connection and one call a
//! partition, 525 under way at once at 600 partitions, and a store that
//! answers one call at a time (the local stack's moto) left the last
//! waiting past the SDK's 10 s attempt timeout; every Replicate failed and
//! the next round set everything up again. A call waits here for a permit
//! before the SDK's timeouts start, so they still say the store did not
//! answer, not that Ferry queued.
//!
//! The deployed functions are not bounded (a store built with
//! [`StateStore::new`](super::StateStore::new) alone): a Replicate holds
//! one batch, 64 partitions at most, and between its set-up and its stop
//! has one call under way at a time. A pair of runs at 400 partitions on
//! the local stack, bound and not, did not settle whether the bound costs
//! them (benchmarks.md).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use tokio::sync::Semaphore;

/// The most DynamoDB calls one process has under way at once: at
/// DynamoDB's few milliseconds a call, thousands of calls a second.
pub const CALLS_IN_FLIGHT: usize = 32;

/// How long a call waits for a permit before it fails as a timeout (the
/// SDK's limit on one call, its retries included): with none of the calls
/// under way answered in that time, the store is not answering, and the
/// calls queued behind them fail with the first, not one wave of 32 after
/// another.
pub const PERMIT_WAIT: Duration = crate::aws::OPERATION_TIMEOUT;

/// The permits of one process's state store, shared by its clones; none
/// (the default): calls go out as they come.
#[derive(Debug, Clone, Default)]
pub(super) struct Calls(Option<Arc<Semaphore>>);

impl Calls {
    /// At most `n` calls under way at once.
    pub(super) fn at_most(n: usize) -> Self {
        Calls(Some(Arc::new(Semaphore::new(n))))
    }
}

/// A DynamoDB call (an SDK `send()`) that waits for one of the store's
/// permits before it is sent and holds it until answered, its retries
/// included; one that waits [`PERMIT_WAIT`] fails as a timeout.
pub(super) trait Bounded<T, E, R>: Future<Output = Result<T, SdkError<E, R>>> + Send + Sized + 'static {
    fn bounded(self, calls: &Calls) -> impl Future<Output = Self::Output> + Send {
        within(self, calls.0.clone(), PERMIT_WAIT)
    }
}

impl<T, E, R, F> Bounded<T, E, R> for F where F: Future<Output = Result<T, SdkError<E, R>>> + Send + 'static {}

async fn within<T, E, R, F>(call: F, permits: Option<Arc<Semaphore>>, wait: Duration) -> F::Output
where
    F: Future<Output = Result<T, SdkError<E, R>>>,
{
    let Some(permits) = permits else {
        return call.await;
    };
    match tokio::time::timeout(wait, permits.acquire_owned()).await {
        Ok(permit) => {
            let _permit = permit.expect("the store's permits are never closed");
            call.await
        }
        Err(_) => Err(SdkError::timeout_error(format!(
            "none of this process's DynamoDB calls under way was answered in {} s; this one was not sent",
            wait.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Sent = Result<u32, SdkError<(), ()>>;

    #[tokio::test(start_paused = true)]
    async fn a_call_past_the_bound_waits_for_one_to_be_answered() {
        let calls = Calls::at_most(CALLS_IN_FLIGHT);
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let answered = Arc::new(tokio::sync::Mutex::new(Some(answered)));
        // CALLS_IN_FLIGHT calls under way, the first answered on a signal,
        // the others never.
        for i in 0..CALLS_IN_FLIGHT {
            let (answered, calls) = (answered.clone(), calls.clone());
            tokio::spawn(async move {
                async move {
                    if i == 0 {
                        let rx = answered.lock().await.take().expect("one receiver");
                        rx.await.ok();
                    } else {
                        std::future::pending::<()>().await;
                    }
                    Ok::<u32, SdkError<(), ()>>(0)
                }
                .bounded(&calls)
                .await
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c = calls.clone();
        let next = tokio::spawn(async move { async { Ok::<u32, SdkError<(), ()>>(7) }.bounded(&c).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!next.is_finished(), "a call went out with {CALLS_IN_FLIGHT} under way");
        answer.send(()).expect("the first call waits");
        let got: Sent = next.await.expect("the call ran");
        assert_eq!(got.ok(), Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_gets_no_permit_in_time_fails_as_a_timeout_unsent() {
        let calls = Calls::at_most(CALLS_IN_FLIGHT);
        for _ in 0..CALLS_IN_FLIGHT {
            let calls = calls.clone();
            tokio::spawn(async move {
                async {
                    std::future::pending::<()>().await;
                    Ok::<u32, SdkError<(), ()>>(0)
                }
                .bounded(&calls)
                .await
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = sent.clone();
        let started = tokio::time::Instant::now();
        let got: Sent = async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(1)
        }
        .bounded(&calls)
        .await;
        assert!(matches!(got, Err(SdkError::TimeoutError(_))), "{got:?}");
        assert_eq!(started.elapsed(), PERMIT_WAIT);
        assert!(!sent.load(std::sync::atomic::Ordering::SeqCst), "the call was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unbounded_store_sends_every_call_at_once() {
        let calls = Calls::default();
        let under_way = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let all = (0..4 * CALLS_IN_FLIGHT).map(|_| {
            let (calls, under_way) = (calls.clone(), under_way.clone());
            tokio::spawn(async move {
                async move {
                    under_way.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::future::pending::<()>().await;
                    Ok::<u32, SdkError<(), ()>>(0)
                }
                .bounded(&calls)
                .await
            })
        });
        let handles: Vec<_> = all.collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(under_way.load(std::sync::atomic::Ordering::SeqCst), 4 * CALLS_IN_FLIGHT);
        handles.iter().for_each(|h| h.abort());
    }

    #[test]
    fn every_call_of_the_store_is_bounded() {
        // The store's files that call DynamoDB: each SDK call goes through
        // a permit (a `.send()` without `.bounded` is outside the bound).
        let files = [
            ("checkpoint.rs", include_str!("checkpoint.rs")),
            ("cursor.rs", include_str!("cursor.rs")),
            ("flows.rs", include_str!("flows.rs")),
            ("groups.rs", include_str!("groups.rs")),
            ("moves.rs", include_str!("moves.rs")),
            ("offset_map.rs", include_str!("offset_map.rs")),
            ("plans.rs", include_str!("plans.rs")),
            ("producers.rs", include_str!("producers.rs")),
            ("schema.rs", include_str!("schema.rs")),
            ("error.rs", include_str!("error.rs")),
        ];
        let mut sends = 0;
        for (name, src) in files {
            let code: String = src.split_whitespace().collect();
            let n = code.matches(".send()").count();
            let bounded = code.matches(".send().bounded(&self.calls)").count();
            assert_eq!(n, bounded, "{name}: {} of {n} DynamoDB calls are not bounded", n - bounded);
            sends += n;
        }
        assert!(sends >= 30, "only {sends} calls found: the list of files is out of date");
    }
}
