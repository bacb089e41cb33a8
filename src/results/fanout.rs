//! Fan-out of recorded results to subscribers. Subscribers are indexed by
//! the tasks they follow, so publishing a batch costs work per interested
//! subscriber, not per subscriber times result; subscribers of all tasks
//! share the batch itself. Each subscriber has a bound on results queued
//! for it: one that exceeds it is cut off (it gets [`Delivery::Lagged`] after
//! everything already queued, so it can resume from its last result) and
//! nobody else notices. The lock is a std mutex held only while handing out
//! pointers, never across an await.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::mpsc;

use crate::task::{TaskId, TaskResult};

/// What a subscriber receives, in order.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Results in cursor order (only those of the followed tasks).
    Results(Arc<[Arc<TaskResult>]>),
    /// A followed task (any task, for a subscriber of all) is terminal and
    /// its last result came before this.
    Ended(TaskId),
    /// The subscriber fell behind its bound and was cut off; nothing follows.
    Lagged,
    /// The server is shutting down; nothing follows.
    Closed,
    /// The store lost its results (a Redis that came back empty): results
    /// before this are gone, and a reader resumes from `resume`, the start
    /// of the new log. Nothing follows.
    Lost {
        /// The new log's start cursor.
        resume: String,
    },
}

/// The subscribers of one server.
#[derive(Debug)]
pub struct Hub {
    /// Most results queued for one subscriber before it is cut off.
    per_subscriber: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Set at shutdown: new subscribers get [`Delivery::Closed`] at once.
    closed: bool,
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
    /// Subscribers of every task.
    all: Vec<u64>,
    /// Subscribers of named tasks, by task.
    by_task: HashMap<TaskId, Vec<u64>>,
}

#[derive(Debug)]
struct Subscriber {
    /// The tasks followed; empty for all.
    tasks: Vec<TaskId>,
    /// Unbounded on purpose: the bound is `queued`, counted in results
    /// rather than in deliveries, and checked before each send.
    tx: mpsc::UnboundedSender<Delivery>,
    /// Results sent and not yet taken by the reader.
    queued: Arc<AtomicUsize>,
}

impl Hub {
    /// A hub that cuts off a subscriber with more than `per_subscriber`
    /// results waiting.
    pub fn new(per_subscriber: usize) -> Arc<Hub> {
        Arc::new(Hub {
            per_subscriber: per_subscriber.max(1),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the maps consistent at each step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the results of `tasks` (all tasks when empty) recorded from
    /// now on.
    pub fn subscribe(self: &Arc<Self>, tasks: &[TaskId]) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        if state.closed {
            let _ = tx.send(Delivery::Closed);
        } else {
            let mut tasks = tasks.to_vec();
            tasks.sort();
            tasks.dedup();
            if tasks.is_empty() {
                state.all.push(id);
            }
            for task in &tasks {
                state.by_task.entry(task.clone()).or_default().push(id);
            }
            state.subscribers.insert(
                id,
                Subscriber {
                    tasks,
                    tx,
                    queued: queued.clone(),
                },
            );
        }
        Subscription {
            id,
            hub: self.clone(),
            rx,
            queued,
        }
    }

    /// Number of subscribers now.
    #[cfg(any(test, feature = "internals"))]
    pub fn subscribers(&self) -> usize {
        self.state().subscribers.len()
    }

    /// Hands `results` (in cursor order) to their subscribers, then the ends
    /// of `ended` tasks. Never waits.
    pub fn publish(&self, results: &[Arc<TaskResult>], ended: &[TaskId]) {
        let mut state = self.state();
        if state.subscribers.is_empty() {
            return;
        }
        let mut cut = Vec::new();
        if !results.is_empty() && !state.all.is_empty() {
            let shared: Arc<[Arc<TaskResult>]> = results.into();
            for id in &state.all {
                if let Some(subscriber) = state.subscribers.get(id)
                    && !self.offer(subscriber, &shared)
                {
                    cut.push(*id);
                }
            }
        }
        if !state.by_task.is_empty() {
            // Each subscriber's share of the batch, in cursor order.
            let mut shares: HashMap<u64, Vec<Arc<TaskResult>>> = HashMap::new();
            for result in results {
                for id in state.by_task.get(&result.task_id).into_iter().flatten() {
                    shares.entry(*id).or_default().push(result.clone());
                }
            }
            for (id, share) in shares {
                if let Some(subscriber) = state.subscribers.get(&id)
                    && !self.offer(subscriber, &share.into())
                {
                    cut.push(id);
                }
            }
        }
        for task in ended {
            let followers = state.by_task.get(task).into_iter().flatten();
            for id in state.all.iter().chain(followers) {
                if let Some(subscriber) = state.subscribers.get(id)
                    && !self.offer_end(subscriber, task)
                {
                    cut.push(*id);
                }
            }
        }
        for id in cut {
            remove(&mut state, id);
        }
    }

    /// Queues `results` for `subscriber`; false when it must be cut off (it
    /// is over its bound, and has been told, or it is gone).
    fn offer(&self, subscriber: &Subscriber, results: &Arc<[Arc<TaskResult>]>) -> bool {
        let queued = subscriber.queued.load(Ordering::Acquire);
        if queued + results.len() > self.per_subscriber {
            let _ = subscriber.tx.send(Delivery::Lagged);
            return false;
        }
        subscriber.queued.fetch_add(results.len(), Ordering::AcqRel);
        subscriber
            .tx
            .send(Delivery::Results(results.clone()))
            .is_ok()
    }

    /// Queues the end of `task`, counted like a result: a reader that stops
    /// reading while tasks end (register and cancel churn, no results) is
    /// cut off like any other, not left to grow its queue.
    fn offer_end(&self, subscriber: &Subscriber, task: &TaskId) -> bool {
        if subscriber.queued.load(Ordering::Acquire) + 1 > self.per_subscriber {
            let _ = subscriber.tx.send(Delivery::Lagged);
            return false;
        }
        subscriber.queued.fetch_add(1, Ordering::AcqRel);
        subscriber.tx.send(Delivery::Ended(task.clone())).is_ok()
    }

    /// Ends every subscription with [`Delivery::Lost`] (after what is
    /// queued): the store lost the log they were reading. New subscribers
    /// read the new log.
    pub fn lost(&self, resume: &str) {
        let mut state = self.state();
        for (_, subscriber) in state.subscribers.drain() {
            let _ = subscriber.tx.send(Delivery::Lost {
                resume: resume.to_string(),
            });
        }
        state.all.clear();
        state.by_task.clear();
    }

    /// Ends every subscription with [`Delivery::Closed`] (after what is
    /// queued) and refuses new ones the same way.
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        for (_, subscriber) in state.subscribers.drain() {
            let _ = subscriber.tx.send(Delivery::Closed);
        }
        state.all.clear();
        state.by_task.clear();
    }
}

fn remove(state: &mut State, id: u64) {
    let Some(subscriber) = state.subscribers.remove(&id) else {
        return;
    };
    if subscriber.tasks.is_empty() {
        state.all.retain(|s| *s != id);
    }
    for task in &subscriber.tasks {
        if let Some(ids) = state.by_task.get_mut(task) {
            ids.retain(|s| *s != id);
            if ids.is_empty() {
                state.by_task.remove(task);
            }
        }
    }
}

/// One subscriber's end. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    hub: Arc<Hub>,
    rx: mpsc::UnboundedReceiver<Delivery>,
    queued: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next delivery; None only after the hub itself is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.recv().await;
        self.taken(&delivery);
        delivery
    }

    /// The next delivery if one is waiting.
    #[cfg(any(test, feature = "internals"))]
    pub fn try_recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.try_recv().ok();
        self.taken(&delivery);
        delivery
    }

    fn taken(&self, delivery: &Option<Delivery>) {
        let taken = match delivery {
            Some(Delivery::Results(results)) => results.len(),
            Some(Delivery::Ended(_)) => 1,
            _ => 0,
        };
        self.queued.fetch_sub(taken, Ordering::AcqRel);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        remove(&mut self.hub.state(), self.id);
    }
}

impl crate::store::LogReader for Hub {
    fn publish(&self, results: &[Arc<TaskResult>], ended: &[TaskId]) {
        Hub::publish(self, results, ended);
    }

    fn lost(&self, resume: &str) {
        Hub::lost(self, resume);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::task::{Outcome, Trigger};

    fn result(task: &str, seq: u64) -> Arc<TaskResult> {
        Arc::new(TaskResult {
            task_id: TaskId::parse(task).unwrap(),
            run: seq,
            cursor: format!("e-{seq}"),
            scheduled_at: DateTime::<Utc>::UNIX_EPOCH,
            started_at: None,
            finished_at: DateTime::<Utc>::UNIX_EPOCH,
            outcome: Outcome::Succeeded,
            attempts: 1,
            trigger: Trigger::Scheduled,
            error: String::new(),
            output: Bytes::new(),
            output_truncated: false,
            http_status: 0,
            occurrence_id: String::new(),
            latency: Duration::ZERO,
            skipped_slots: 0,
            claim_lapsed: false,
            executor: Default::default(),
            wire: Default::default(),
        })
    }

    fn runs(delivery: Option<Delivery>) -> Vec<u64> {
        match delivery {
            Some(Delivery::Results(results)) => results.iter().map(|r| r.run).collect(),
            other => panic!("expected results, got {other:?}"),
        }
    }

    #[test]
    fn each_subscriber_gets_its_tasks_in_order_and_ends_after_results() {
        let hub = Hub::new(100);
        let a = TaskId::parse("a").unwrap();
        let mut all = hub.subscribe(&[]);
        let mut of_a = hub.subscribe(std::slice::from_ref(&a));
        hub.publish(
            &[result("a", 1), result("b", 2), result("a", 3)],
            std::slice::from_ref(&a),
        );
        assert_eq!(runs(all.try_recv()), vec![1, 2, 3]);
        assert!(matches!(all.try_recv(), Some(Delivery::Ended(t)) if t == a));
        assert_eq!(runs(of_a.try_recv()), vec![1, 3]);
        assert!(matches!(of_a.try_recv(), Some(Delivery::Ended(t)) if t == a));
    }

    #[test]
    fn a_reader_over_its_bound_is_cut_off_alone_after_what_it_has() {
        let hub = Hub::new(3);
        let mut slow = hub.subscribe(&[]);
        let mut quick = hub.subscribe(&[]);
        hub.publish(&[result("a", 1), result("a", 2)], &[]);
        assert_eq!(runs(quick.try_recv()), vec![1, 2]);
        hub.publish(&[result("a", 3), result("a", 4)], &[]);
        assert_eq!(runs(quick.try_recv()), vec![3, 4]);
        assert_eq!(runs(slow.try_recv()), vec![1, 2]);
        assert!(matches!(slow.try_recv(), Some(Delivery::Lagged)));
        assert_eq!(hub.subscribers(), 1);
        hub.publish(&[result("a", 5)], &[]);
        assert_eq!(runs(quick.try_recv()), vec![5]);
        assert!(slow.try_recv().is_none());
    }

    #[test]
    fn ends_count_toward_the_bound_of_a_reader_that_does_not_read() {
        let hub = Hub::new(2);
        let mut idle = hub.subscribe(&[]);
        let ends: Vec<TaskId> = ["a", "b", "c"]
            .iter()
            .map(|t| TaskId::parse(t).unwrap())
            .collect();
        hub.publish(&[], &ends);
        assert!(matches!(idle.try_recv(), Some(Delivery::Ended(_))));
        assert!(matches!(idle.try_recv(), Some(Delivery::Ended(_))));
        assert!(matches!(idle.try_recv(), Some(Delivery::Lagged)));
        assert_eq!(hub.subscribers(), 0);
    }

    #[test]
    fn close_ends_everyone_and_dropping_unsubscribes() {
        let hub = Hub::new(10);
        let gone = hub.subscribe(&[TaskId::parse("a").unwrap()]);
        let mut open = hub.subscribe(&[]);
        drop(gone);
        assert_eq!(hub.subscribers(), 1);
        hub.close();
        assert!(matches!(open.try_recv(), Some(Delivery::Closed)));
        let mut late = hub.subscribe(&[]);
        assert!(matches!(late.try_recv(), Some(Delivery::Closed)));
    }
}
