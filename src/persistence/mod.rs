//! The persistence actor: records connections, forwarded messages and publications in
//! DynamoDB (or the local record store), and reads a project's audit back.
//!
//! - [`records`]: the record types and the single-table key schema. [`dynamo`]: BatchWriteItem
//!   and Query. [`local`]: the JSON-lines stand-in.
//!
//! **The write path never blocks a client.** Producers call [`RecordSink::record`], which
//! `try_send`s into a channel of PERSISTENCE_BUFFER_RECORDS records: that channel is the
//! buffer. The actor's write loop takes up to 25 records at a time and writes them, retrying
//! unprocessed items and transient faults with backoff until they are written; while it
//! retries, the buffer fills. **When the buffer is full, new records are dropped**, counted in
//! `agenticai_ws_records_dropped_total` and logged (the first drop, then every 1,000th): the
//! audit trail must not take the gateway down with the table. A record the table refuses for
//! good (a validation error) is dropped the same way; since DynamoDB refuses a whole batch for
//! one such record, a refused batch is written again one record at a time, so only the bad one
//! is lost. SIGTERM flushes the buffer ([`Flush`]).

pub(crate) mod dynamo;
pub(crate) mod local;
pub(crate) mod records;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix::prelude::*;
use serde_json::{Map, Value};
use tokio::{sync::mpsc, time::Instant};

pub(crate) use self::records::{AuditPage, ConnectionRecord, PublicationAudit, Record};
use self::{dynamo::DynamoStore, local::LocalStore};
use crate::{aws::Fault, metrics::Metrics};

const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

/// Where records go.
pub(crate) enum RecordStore {
    Dynamo(DynamoStore),
    Local(LocalStore),
}

impl RecordStore {
    async fn write(&self, items: &[Map<String, Value>]) -> Result<Vec<Map<String, Value>>, Fault> {
        match self {
            RecordStore::Dynamo(store) => store.write(items).await,
            RecordStore::Local(store) => store
                .write(items)
                .await
                .map(|()| Vec::new())
                .map_err(|error| Fault::Transient(format!("local record store: {error}"))),
        }
    }

    async fn query_project(&self, project_id: &str, limit: usize, cursor: Option<&str>) -> Result<AuditPage, String> {
        match self {
            RecordStore::Dynamo(store) => {
                store.query_project(project_id, limit, cursor).await.map_err(|fault| match fault {
                    Fault::Transient(reason) | Fault::Permanent(reason) => reason,
                })
            }
            RecordStore::Local(store) => {
                store.query_project(project_id, limit, cursor).await.map_err(|error| error.to_string())
            }
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            RecordStore::Dynamo(store) => format!("DynamoDB table {}", store.table()),
            RecordStore::Local(store) => format!("local record store {}", store.path().display()),
        }
    }
}

/// The producers' handle: cheap to clone, never blocks.
#[derive(Clone)]
pub(crate) struct RecordSink {
    tx: mpsc::Sender<Record>,
    /// Records handed over and not yet written or dropped (what a flush waits for).
    outstanding: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl RecordSink {
    /// Buffers a record for writing, or drops and counts it when the buffer is full.
    pub(crate) fn record(&self, record: Record) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(record) {
            Ok(()) => self.metrics.records_buffered.inc(),
            Err(error) => {
                self.outstanding.fetch_sub(1, Ordering::Relaxed);
                let record = match &error {
                    mpsc::error::TrySendError::Full(record) | mpsc::error::TrySendError::Closed(record) => record,
                };
                self.dropped(record.kind(), "persistence buffer full (is the table reachable?)");
            }
        }
    }

    fn written(&self, kind: &str) {
        self.metrics.records_written.with_label_values(&[kind]).inc();
    }

    fn dropped(&self, kind: &str, reason: &str) {
        self.metrics.records_dropped.inc();
        let total = self.metrics.records_dropped.get();
        if total == 1 || total.is_multiple_of(1000) {
            log::error!(kind = kind, dropped_total = total, reason = reason; "record dropped");
        }
    }
}

/// Waits until every buffered record is written (or dropped); the caller bounds it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Flush;

/// Reads a project's audit, newest first.
#[derive(Message)]
#[rtype(result = "Result<AuditPage, String>")]
pub(crate) struct QueryProject {
    pub project_id: String,
    pub limit: usize,
    pub cursor: Option<String>,
}

pub(crate) struct Persistence {
    store: Arc<RecordStore>,
    rx: Option<mpsc::Receiver<Record>>,
    sink: RecordSink,
    ttl: Duration,
}

impl Persistence {
    /// The actor and the sink producers use.
    pub(crate) fn new(
        store: RecordStore,
        buffer_records: usize,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> (Self, RecordSink) {
        let (tx, rx) = mpsc::channel(buffer_records);
        let sink = RecordSink { tx, outstanding: Arc::new(AtomicUsize::new(0)), metrics };
        let actor = Persistence { store: Arc::new(store), rx: Some(rx), sink: sink.clone(), ttl };
        (actor, sink)
    }
}

impl Actor for Persistence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(rx) = self.rx.take() {
            ctx.spawn(write_loop(self.store.clone(), rx, self.sink.clone(), self.ttl).into_actor(self));
        }
    }
}

/// Takes records off the buffer 25 at a time and writes them until they are written.
async fn write_loop(store: Arc<RecordStore>, mut rx: mpsc::Receiver<Record>, sink: RecordSink, ttl: Duration) {
    let mut batch = Vec::with_capacity(dynamo::MAX_BATCH_ITEMS);
    while rx.recv_many(&mut batch, dynamo::MAX_BATCH_ITEMS).await > 0 {
        let expires = chrono::Utc::now().timestamp() + ttl.as_secs() as i64;
        let items: Vec<Map<String, Value>> = batch.iter().map(|record| record.item(expires)).collect();
        match write_until_done(&store, items, &sink).await {
            Ok(()) => batch.iter().for_each(|record| sink.written(record.kind())),
            Err(reason) if batch.len() == 1 => sink.dropped(batch[0].kind(), &reason),
            Err(reason) => {
                // DynamoDB refuses a whole batch for one bad item: write them one at a time, so
                // only that one is lost. (Rewriting any already written is harmless: same keys.)
                log::warn!(items = batch.len(), reason = reason.as_str(); "record batch refused, writing its records one by one");
                for record in &batch {
                    match write_until_done(&store, vec![record.item(expires)], &sink).await {
                        Ok(()) => sink.written(record.kind()),
                        Err(reason) => sink.dropped(record.kind(), &reason),
                    }
                }
            }
        }
        sink.metrics.records_buffered.sub(batch.len() as i64);
        sink.outstanding.fetch_sub(batch.len(), Ordering::Relaxed);
        batch.clear();
    }
}

/// Writes `items`, retrying unprocessed items and transient faults with backoff, until they are
/// all written (Ok) or the store refuses them for good (Err with its reason).
async fn write_until_done(
    store: &RecordStore,
    mut items: Vec<Map<String, Value>>,
    sink: &RecordSink,
) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        let started = Instant::now();
        let result = store.write(&items).await;
        sink.metrics.dynamodb_batch_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(unprocessed) if unprocessed.is_empty() => return Ok(()),
            Ok(unprocessed) => {
                sink.metrics.record_retries.inc_by(unprocessed.len() as u64);
                items = unprocessed;
            }
            Err(Fault::Transient(reason)) => {
                sink.metrics.record_retries.inc_by(items.len() as u64);
                if attempt == 0 {
                    log::warn!(items = items.len(), reason = reason.as_str(); "record write failed, retrying with backoff");
                }
            }
            Err(Fault::Permanent(reason)) => return Err(reason),
        }
        tokio::time::sleep(crate::aws::backoff(attempt, RETRY_BASE, RETRY_CAP)).await;
        attempt += 1;
    }
}

impl Handler<Flush> for Persistence {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        let outstanding = self.sink.outstanding.clone();
        Box::pin(async move {
            while outstanding.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }
}

impl Handler<QueryProject> for Persistence {
    type Result = ResponseFuture<Result<AuditPage, String>>;

    fn handle(&mut self, msg: QueryProject, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move { store.query_project(&msg.project_id, msg.limit, msg.cursor.as_deref()).await })
    }
}

impl RecordSink {
    /// Records still buffered (for the shutdown log).
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }
}
