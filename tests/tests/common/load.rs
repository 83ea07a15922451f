//! Sagas started over NATS as a client starts them: a start request sent
//! again with the same idempotency key while no orchestrator answers (an
//! instance killed, NATS away), one at a time or as a load of many at a time.

use sagas::protocol::{Namespace, StartRequest, StartResponse};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one start request waits for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// The pause before a start is sent again.
const AGAIN_AFTER: Duration = Duration::from_millis(100);

/// A saga a client had accepted.
#[derive(Debug, Clone)]
pub struct Begun {
    pub saga_type: String,
    pub key: String,
    pub id: String,
    pub input: Value,
}

/// The i-th saga of a load: (type, idempotency key, input).
pub type Make = Arc<dyn Fn(usize) -> (String, String, Value) + Send + Sync>;

/// A client that starts sagas.
#[derive(Debug, Clone)]
pub struct Starter {
    client: async_nats::Client,
    ns: Namespace,
    /// How long a start is sent again while nobody answers.
    within: Duration,
    /// Whether a start refused as `unavailable` is sent again too.
    retry_unavailable: bool,
}

impl Starter {
    /// A client that sends a start again for up to `within` while no
    /// orchestrator answers; a refusal fails the test.
    pub fn new(client: &async_nats::Client, ns: &Namespace, within: Duration) -> Self {
        Self { client: client.clone(), ns: ns.clone(), within, retry_unavailable: false }
    }

    /// The same client, sending a start again also when it is refused as
    /// `unavailable` (the orchestrator could not record it: its database or
    /// NATS was away), as a client should.
    pub fn retrying_unavailable(mut self) -> Self {
        self.retry_unavailable = true;
        self
    }

    /// One start request; `None` when nobody answered in time.
    pub async fn request(&self, saga_type: &str, body: Vec<u8>) -> Option<StartResponse> {
        let answer = tokio::time::timeout(
            ANSWER_WITHIN,
            self.client.request(self.ns.start_subject(saga_type), body.into()),
        )
        .await;
        match answer {
            Ok(Ok(msg)) => Some(
                serde_json::from_slice(&msg.payload)
                    .unwrap_or_else(|e| panic!("a start answer that is not a StartResponse: {e}")),
            ),
            _ => None,
        }
    }

    /// Start a saga: the id it was given.
    pub async fn start(&self, saga_type: &str, key: &str, input: &Value) -> String {
        let request =
            StartRequest { idempotency_key: key.to_owned(), input: input.clone(), wait_ms: None };
        let body = serde_json::to_vec(&request).unwrap();
        let deadline = Instant::now() + self.within;
        loop {
            match self.request(saga_type, body.clone()).await {
                Some(
                    StartResponse::Started { saga_id, .. }
                    | StartResponse::Existing { saga_id, .. },
                ) => {
                    return saga_id;
                }
                Some(StartResponse::Refused { code, .. })
                    if self.retry_unavailable && code == "unavailable" => {}
                None => {}
                Some(other) => panic!("start of {key} refused: {other:?}"),
            }
            assert!(Instant::now() < deadline, "no orchestrator accepted the start of {key}");
            tokio::time::sleep(AGAIN_AFTER).await;
        }
    }

    /// Start `total` sagas made by `make`, `concurrency` at a time.
    pub fn load(&self, total: usize, concurrency: usize, make: Make) -> Load {
        let begun = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let count = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (starter, make) = (self.clone(), make.clone());
            let (begun, count, next) = (begun.clone(), count.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        return;
                    }
                    let (saga_type, key, input) = make(i);
                    let id = starter.start(&saga_type, &key, &input).await;
                    begun.lock().unwrap().push(Begun { saga_type, key, id, input });
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        let task = tokio::spawn(async move {
            for w in workers {
                w.await.unwrap();
            }
        });
        Load { begun, count, task }
    }
}

/// Sagas being started in the background, as [`Starter::load`] began them.
#[derive(Debug)]
pub struct Load {
    begun: Arc<Mutex<Vec<Begun>>>,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// How many have been started so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Wait until `n` have been started (at most `within`).
    pub async fn until(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count() < n {
            assert!(!self.task.is_finished(), "the load stopped after {} starts", self.count());
            assert!(Instant::now() < deadline, "only {} of {n} sagas started", self.count());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The id of a saga started already.
    pub fn some_id(&self) -> String {
        self.begun.lock().unwrap().first().map(|b| b.id.clone()).unwrap()
    }

    /// Wait until every saga has been started: all of them.
    pub async fn finish(self) -> Vec<Begun> {
        self.task.await.unwrap();
        self.begun.lock().unwrap().clone()
    }
}
