//! Client-side rate limiting: client-go's token bucket (`flowcontrol.NewTokenBucketRateLimiter`)
//! as a tower layer, because kube-rs has none and upstream throttles every request to the API
//! server at `clientConnection.qps` with bursts of up to `clientConnection.burst`.
//!
//! Each request takes one token, as in client-go: a watch costs one token when it starts, however
//! long it then streams. The layer sits under kube's `Client`, whose internal buffer drives
//! `poll_ready` and `call` one request at a time, so the bucket needs no lock.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::time::{Instant, Sleep, sleep};
use tower::{Layer, Service};

/// client-go's defaults when the configuration leaves QPS or burst at 0.
pub const DEFAULT_QPS: f32 = 5.0;
pub const DEFAULT_BURST: i32 = 10;

/// Makes [`TokenBucket`] services sharing nothing: one layer per client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenBucketLayer {
    qps: f64,
    burst: u32,
}

impl TokenBucketLayer {
    /// `qps` requests per second on average, at most `burst` at once (at least 1).
    pub fn new(qps: f64, burst: u32) -> Self {
        Self {
            qps,
            burst: burst.max(1),
        }
    }

    /// The limiter client-go builds for a rest.Config: QPS 0 means the default 5 and burst 0
    /// the default 10; a negative QPS turns rate limiting off (`None`).
    pub fn from_client_go(qps: f32, burst: i32) -> Option<Self> {
        let qps = if qps == 0.0 { DEFAULT_QPS } else { qps };
        let burst = if burst == 0 { DEFAULT_BURST } else { burst };
        (qps > 0.0).then(|| Self::new(f64::from(qps), burst.max(1).unsigned_abs()))
    }

    pub fn qps(&self) -> f64 {
        self.qps
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }
}

impl<S> Layer<S> for TokenBucketLayer {
    type Service = TokenBucket<S>;

    fn layer(&self, inner: S) -> TokenBucket<S> {
        TokenBucket {
            inner,
            qps: self.qps,
            burst: f64::from(self.burst),
            // A new client may burst at once, as client-go's bucket starts full.
            tokens: f64::from(self.burst),
            last: Instant::now(),
            reserved: false,
            wait: None,
        }
    }
}

/// A service that is ready only when a token is available.
pub struct TokenBucket<S> {
    inner: S,
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// A token was taken for the next `call`.
    reserved: bool,
    wait: Option<Pin<Box<Sleep>>>,
}

impl<S> TokenBucket<S> {
    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
        }
    }
}

impl<S, Req> Service<Req> for TokenBucket<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.reserved {
            if let Some(wait) = self.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            match self.take(Instant::now()) {
                Ok(()) => self.reserved = true,
                Err(delay) => self.wait = Some(Box::pin(sleep(delay))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> S::Future {
        // The token was taken in poll_ready; the next request needs a new one.
        self.reserved = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceExt, service_fn};

    use super::*;

    #[test]
    fn zero_qps_and_burst_mean_client_gos_defaults_and_negative_qps_means_unlimited() {
        assert_eq!(
            TokenBucketLayer::from_client_go(0.0, 0),
            Some(TokenBucketLayer::new(5.0, 10))
        );
        assert_eq!(
            TokenBucketLayer::from_client_go(50.0, 100),
            Some(TokenBucketLayer::new(50.0, 100))
        );
        assert_eq!(TokenBucketLayer::from_client_go(-1.0, 10), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_at_once_and_further_requests_wait_one_token_interval_each() {
        let mut svc = TokenBucketLayer::new(2.0, 3)
            .layer(service_fn(|n: u32| async move { Ok::<_, Infallible>(n) }));
        let start = Instant::now();
        let mut at = Vec::new();
        for n in 0..5 {
            let out = svc.ready().await.unwrap().call(n).await.unwrap();
            assert_eq!(out, n);
            at.push(start.elapsed());
        }
        let ms: Vec<u128> = at.iter().map(|d| d.as_millis()).collect();
        // 3 from the burst, then one every 1/qps = 500 ms.
        assert_eq!(ms, [0, 0, 0, 500, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_client_regains_at_most_burst_tokens() {
        let mut svc = TokenBucketLayer::new(1.0, 2)
            .layer(service_fn(|n: u32| async move { Ok::<_, Infallible>(n) }));
        tokio::time::advance(Duration::from_secs(60)).await;
        let start = Instant::now();
        for n in 0..3 {
            svc.ready().await.unwrap().call(n).await.unwrap();
        }
        assert_eq!(
            start.elapsed().as_millis(),
            1000,
            "two free, the third waits 1 s"
        );
    }
}
