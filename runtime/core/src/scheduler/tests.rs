//! The scheduler driven by hand and by random event sequences, with connections
//! as plain numbers.

use super::*;
use proptest::prelude::*;

type Sched = Scheduler<u32>;

const IDLE: Duration = Duration::from_millis(30);

fn sched() -> Sched {
    Scheduler::new(1, IDLE)
}

fn task_id(n: u64) -> TaskId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    TaskId(b)
}

fn actor_id(n: u8) -> ActorId {
    ActorId([n; 16])
}

fn new_task(n: u64, max_retries: u32, actor: Option<ActorId>) -> NewTask {
    NewTask {
        id: task_id(n),
        name: format!("f{n}"),
        function: FunctionDescriptor { name: format!("f{n}"), ..FunctionDescriptor::default() },
        args: Vec::new(),
        resources: if actor.is_some() { Resources::new() } else { [("CPU".to_string(), 1.0)].into() },
        steering: Steering::default(),
        max_retries,
        retry_exceptions: false,
        actor,
    }
}

fn spec(n: u64) -> TaskSpec {
    TaskSpec { task_id: task_id(n).0.to_vec().into(), ..TaskSpec::default() }
}

fn lease(id: u64) -> Lease {
    Lease {
        lease_id: id,
        node_address: "node".into(),
        node_id: Bytes::from_static(b"n"),
        worker_address: format!("worker-{id}"),
        direct_address: String::new(),
        pid: 1000 + id as u32,
    }
}

fn ok_reply() -> Reply {
    Reply { result: State::Ready(Value::Inline(Bytes::from_static(b"v"))), pid: 1, refs: ReplyRefs::default() }
}

fn shm_reply() -> Reply {
    let shm = Value::Shm { path: "p".into(), span: None, size: 1, node_id: Bytes::new(), node_address: "n".into() };
    Reply { result: State::Ready(shm), pid: 1, refs: ReplyRefs::default() }
}

fn key() -> SchedKey {
    format_resources(&[("CPU".to_string(), 1.0)].into())
}

/// Submits task `n` and resolves its arguments at once.
fn submit_ready(s: &mut Sched, task: NewTask) -> Vec<Action<u32>> {
    let n = task.id;
    let mut actions = s.submit(task);
    assert!(matches!(actions.remove(0), Action::WatchArgs { task, .. } if task == n));
    let mut spec = spec(0);
    spec.task_id = n.0.to_vec().into();
    s.args_resolved(n, Ok(spec))
}

fn requests(actions: &[Action<u32>]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RequestLease { request, .. } => Some(*request),
            _ => None,
        })
        .collect()
}

fn pushes(actions: &[Action<u32>]) -> Vec<(SlotId, TaskId)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Push { slot, task, .. } => Some((*slot, *task)),
            _ => None,
        })
        .collect()
}

fn finished(actions: &[Action<u32>]) -> Vec<(TaskId, State)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Finish(f) => Some((f.task, f.result.clone())),
            _ => None,
        })
        .collect()
}

/// Grants and connects the first request in `actions`; returns what followed.
fn grant(s: &mut Sched, actions: &[Action<u32>], lease_id: u64, now: Instant) -> Vec<Action<u32>> {
    let request = requests(actions)[0];
    let granted = s.lease_granted(&key(), request, lease(lease_id));
    let [Action::Connect { lease: l, .. }] = granted.as_slice() else { panic!("expected a connect: {granted:?}") };
    s.lease_connected(&key(), l.clone(), lease_id as u32, now)
}

#[test]
fn a_task_leases_a_worker_runs_and_gives_the_lease_back_when_idle() {
    let mut s = sched();
    let now = Instant::now();
    let asked = submit_ready(&mut s, new_task(1, 3, None));
    assert_eq!(requests(&asked).len(), 1);
    let pushed = grant(&mut s, &asked, 7, now);
    assert_eq!(pushes(&pushed), vec![(0, task_id(1))]);
    let done = s.task_replied(&key(), 0, task_id(1), ok_reply(), now);
    assert!(matches!(finished(&done).as_slice(), [(t, State::Ready(_))] if *t == task_id(1)));
    assert!(s.return_idle_leases(now + IDLE / 2).is_empty(), "kept for the next task while fresh");
    let returned = s.return_idle_leases(now + IDLE);
    assert!(
        matches!(returned.as_slice(), [Action::ReturnLease { lease, conn: Some(7), worker_failed: false }] if lease.lease_id == 7)
    );
    let states: Vec<TaskState> = s.take_events().iter().map(|e| e.state()).collect();
    use TaskState::*;
    assert_eq!(states, [PendingArgsAvail, PendingNodeAssignment, Running, Finished]);
}

#[test]
fn a_spread_task_gives_its_lease_back_so_the_next_one_is_placed_anew() {
    let mut s = sched();
    let now = Instant::now();
    let spread = || Steering {
        lease: Some(ray_proto::LeaseStrategy { kind: Some(ray_proto::lease_strategy::Kind::Spread(true)) }),
        group: None,
    };
    let key = spread().key(&[("CPU".to_string(), 1.0)].into());
    assert_ne!(key, self::key(), "the strategy is part of the scheduling key");
    let mut first = new_task(1, 3, None);
    first.steering = spread();
    let mut second = new_task(2, 3, None);
    second.steering = spread();
    let asked = submit_ready(&mut s, first);
    let asked_again = submit_ready(&mut s, second);
    let strategies: Vec<bool> = asked
        .iter()
        .chain(&asked_again)
        .filter_map(|a| match a {
            Action::RequestLease { strategy, .. } => Some(strategy.is_some()),
            _ => None,
        })
        .collect();
    assert_eq!(strategies, [true, true], "each task asks for its own lease, carrying the strategy");
    let granted = s.lease_granted(&key, requests(&asked)[0], lease(7));
    let [Action::Connect { lease: l, .. }] = granted.as_slice() else { panic!("{granted:?}") };
    let pushed = s.lease_connected(&key, l.clone(), 7, now);
    assert_eq!(pushes(&pushed), vec![(0, task_id(1))]);
    let done = s.task_replied(&key, 0, task_id(1), ok_reply(), now);
    assert!(
        done.iter()
            .any(|a| matches!(a, Action::ReturnLease { lease, worker_failed: false, .. } if lease.lease_id == 7)),
        "{done:?}"
    );
    assert!(pushes(&done).is_empty(), "task 2 waits for a lease of its own, not this worker");
}

#[test]
fn a_killed_attempt_ends_failed_and_the_retry_runs() {
    let mut s = sched();
    let now = Instant::now();
    let asked = submit_ready(&mut s, new_task(1, 1, None));
    grant(&mut s, &asked, 1, now);
    let after_death = s.worker_died(&key(), 0, task_id(1), "killed");
    assert!(after_death.iter().any(|a| matches!(a, Action::ReturnLease { worker_failed: true, .. })));
    assert!(finished(&after_death).is_empty(), "one retry is left");
    let pushed = grant(&mut s, &after_death, 2, now);
    assert_eq!(pushes(&pushed), vec![(1, task_id(1))]);
    s.task_replied(&key(), 1, task_id(1), ok_reply(), now);
    let events: Vec<(u32, TaskState, String)> =
        s.take_events().into_iter().map(|e| (e.attempt, e.state(), e.error_type)).collect();
    assert!(events.contains(&(0, TaskState::Failed, "WORKER_DIED".into())), "{events:?}");
    assert_eq!(events.last(), Some(&(1, TaskState::Finished, String::new())));
}

#[test]
fn a_task_whose_workers_keep_dying_fails_after_its_retries() {
    let mut s = sched();
    let now = Instant::now();
    let mut actions = submit_ready(&mut s, new_task(1, 2, None));
    for attempt in 0..3u64 {
        grant(&mut s, &actions, attempt, now);
        actions = s.worker_died(&key(), attempt, task_id(1), "killed");
    }
    assert!(
        matches!(finished(&actions).as_slice(), [(_, State::Failed(RayError::WorkerCrashed { attempts: 3, .. }))]),
        "{actions:?}"
    );
}

#[test]
fn a_cancelled_queued_task_never_runs_and_its_late_lease_goes_back() {
    let mut s = sched();
    let asked = submit_ready(&mut s, new_task(1, 3, None));
    let cancelled = s.cancel(task_id(1), false);
    assert!(matches!(finished(&cancelled).as_slice(), [(_, State::Failed(RayError::Cancelled { .. }))]));
    assert!(cancelled.iter().any(|a| matches!(a, Action::WithdrawLease { .. })));
    let granted = s.lease_granted(&key(), requests(&asked)[0], lease(3));
    assert!(matches!(granted.as_slice(), [Action::ReturnLease { conn: None, .. }]));
}

#[test]
fn force_cancel_kills_the_running_worker_and_drops_its_reply() {
    let mut s = sched();
    let now = Instant::now();
    let asked = submit_ready(&mut s, new_task(1, 3, None));
    grant(&mut s, &asked, 4, now);
    let cancelled = s.cancel(task_id(1), true);
    assert!(cancelled.iter().any(|a| matches!(a, Action::KillWorker { pid: 1004, .. })));
    let late = s.worker_died(&key(), 0, task_id(1), "killed");
    assert!(finished(&late).is_empty() && pushes(&late).is_empty());
}

#[test]
fn an_infeasible_lease_fails_every_queued_task_of_its_key() {
    let mut s = sched();
    let asked = submit_ready(&mut s, new_task(1, 3, None));
    submit_ready(&mut s, new_task(2, 3, None));
    let error = RayError::Infeasible { function: "f".into(), requested: "CPU: 1".into(), available: String::new() };
    let mut failed = Vec::new();
    for request in [requests(&asked)[0], 2] {
        failed.extend(s.lease_failed(&key(), request, error.clone()));
    }
    assert_eq!(finished(&failed).len(), 2);
}

#[test]
fn a_result_in_shared_memory_keeps_its_lineage_until_freed() {
    let mut s = sched();
    let now = Instant::now();
    let mut task = new_task(1, 2, None);
    let dep = ObjectId::new(task_id(99), 1);
    task.args = vec![ArgSubmission::Ref(dep)];
    let watch = s.submit(task);
    assert!(matches!(&watch[..], [Action::WatchArgs { args, .. }] if args == &[dep]));
    let asked = s.args_resolved(task_id(1), Ok(spec(1)));
    grant(&mut s, &asked, 1, now);
    let shm = Value::Shm { path: "p".into(), span: None, size: 1, node_id: Bytes::new(), node_address: "n".into() };
    let reply = Reply { result: State::Ready(shm), pid: 1, refs: ReplyRefs::default() };
    let done = s.task_replied(&key(), 0, task_id(1), reply, now);
    let [Action::Finish(f)] = &done[..] else { panic!("{done:?}") };
    assert!(f.release.is_empty(), "the lineage keeps its inputs");
    let (_, again) = s.rebuild(&f.return_id).expect("lineage kept");
    assert!(matches!(&again[..], [Action::WatchArgs { args, .. }] if args == &[dep]));
    assert!(s.rebuild(&f.return_id).is_none(), "the task is running again, not lineage");
}

fn located(incarnation: u32, conn: u32, max_task_retries: i32) -> ActorLocation<u32> {
    ActorLocation::Alive {
        incarnation,
        pid: 50 + conn,
        node_id: Bytes::new(),
        address: "a".into(),
        max_task_retries,
        conn,
    }
}

fn calls(actions: &[Action<u32>]) -> Vec<(SentCall, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CallActor { call, spec, .. } => Some((*call, spec.actor_task.as_ref().expect("numbered").seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn actor_calls_leave_in_submission_order_whatever_order_their_arguments_resolve_in() {
    let mut s = sched();
    let actor = actor_id(1);
    for n in 1..=3 {
        assert!(matches!(&s.submit(new_task(n, 0, Some(actor)))[..], [Action::WatchArgs { .. }]));
    }
    let locate = s.args_resolved(task_id(3), Ok(spec(3)));
    assert!(matches!(&locate[..], [Action::LocateActor { min_incarnation: 0, .. }]));
    assert!(calls(&s.actor_located(actor, located(0, 1, 0))).is_empty(), "call 1 waits for its arguments");
    assert!(calls(&s.args_resolved(task_id(2), Ok(spec(2)))).is_empty());
    let sent = calls(&s.args_resolved(task_id(1), Ok(spec(1))));
    let order: Vec<(TaskId, u64)> = sent.iter().map(|(c, seq)| (c.task, *seq)).collect();
    assert_eq!(order, vec![(task_id(1), 0), (task_id(2), 1), (task_id(3), 2)]);
}

#[test]
fn calls_lost_with_a_restarting_actor_are_resent_in_order_to_the_new_incarnation() {
    let mut s = sched();
    let actor = actor_id(1);
    for n in 1..=3 {
        s.submit(new_task(n, 0, Some(actor)));
        s.args_resolved(task_id(n), Ok(spec(n)));
    }
    let sent = calls(&s.actor_located(actor, located(0, 1, -1)));
    assert_eq!(sent.len(), 3);
    // The replies fail out of order; nothing is resent until all have.
    let mut after = Vec::new();
    for i in [2, 0, 1] {
        after.extend(s.actor_call_lost(sent[i].0, "broken".into()));
    }
    assert!(matches!(after.iter().filter(|a| matches!(a, Action::LocateActor { .. })).count(), 1));
    assert!(after.iter().any(|a| matches!(a, Action::LocateActor { min_incarnation: 1, .. })));
    let resent = calls(&s.actor_located(actor, located(1, 2, -1)));
    let order: Vec<(TaskId, u32, u64)> = resent.iter().map(|(c, seq)| (c.task, c.incarnation, *seq)).collect();
    assert_eq!(order, vec![(task_id(1), 1, 0), (task_id(2), 1, 1), (task_id(3), 1, 2)]);
}

#[test]
fn a_call_that_may_not_be_resent_is_explained_then_failed() {
    let mut s = sched();
    let actor = actor_id(1);
    s.submit(new_task(1, 0, Some(actor)));
    s.args_resolved(task_id(1), Ok(spec(1)));
    let sent = calls(&s.actor_located(actor, located(0, 1, 0)));
    let lost = s.actor_call_lost(sent[0].0, "broken".into());
    assert!(matches!(&lost[..], [Action::ExplainLostCall { max_task_retries: 0, .. }]));
    let error = RayError::ActorDied { class: "A".into(), actor_id: "a".into(), cause: "gone".into() };
    assert_eq!(finished(&s.fail(task_id(1), error)).len(), 1);
}

#[test]
fn calls_to_a_dead_actor_fail_with_its_death() {
    let mut s = sched();
    let actor = actor_id(1);
    s.submit(new_task(1, 0, Some(actor)));
    s.args_resolved(task_id(1), Ok(spec(1)));
    let error = RayError::ActorDied { class: "A".into(), actor_id: "a".into(), cause: "killed".into() };
    let failed = s.actor_located(actor, ActorLocation::Gone(error));
    assert!(matches!(finished(&failed).as_slice(), [(_, State::Failed(RayError::ActorDied { .. }))]));
}

// ------------------------------------------------------------------ property

/// One thing that can happen to the scheduler, picked among what is possible
/// at that moment by `pick` (taken modulo the number of candidates).
#[derive(Debug, Clone)]
enum Op {
    Submit {
        max_retries: u32,
        actor: bool,
    },
    ResolveArgs(usize),
    AnswerLease {
        pick: usize,
        grant: bool,
    },
    Connect {
        pick: usize,
        ok: bool,
    },
    Reply {
        pick: usize,
        outcome: u8,
    },
    Cancel {
        pick: usize,
        force: bool,
    },
    Locate {
        pick: usize,
        restart: bool,
    },
    /// The node holding a finished task's result died: rebuild it from lineage.
    LoseResult(usize),
    Idle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..3, any::<bool>()).prop_map(|(max_retries, actor)| Op::Submit { max_retries, actor }),
        3 => any::<usize>().prop_map(Op::ResolveArgs),
        3 => (any::<usize>(), prop::bool::weighted(0.8)).prop_map(|(pick, grant)| Op::AnswerLease { pick, grant }),
        3 => (any::<usize>(), prop::bool::weighted(0.9)).prop_map(|(pick, ok)| Op::Connect { pick, ok }),
        5 => (any::<usize>(), 0u8..4).prop_map(|(pick, outcome)| Op::Reply { pick, outcome }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, force)| Op::Cancel { pick, force }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, restart)| Op::Locate { pick, restart }),
        1 => any::<usize>().prop_map(Op::LoseResult),
        1 => Just(Op::Idle),
    ]
}

/// The world around the scheduler: what it asked for and has not heard back
/// about, and what it did, checked against the invariants as it happens.
#[derive(Default)]
struct World {
    now_ms: u64,
    next_task: u64,
    next_lease: u64,
    max_retries: HashMap<TaskId, u32>,
    watched: Vec<TaskId>,
    requests: Vec<u64>,
    connecting: Vec<Lease>,
    pushed: Vec<(SlotId, TaskId, u32)>,
    calls: Vec<SentCall>,
    locating: Vec<ActorId>,
    incarnation: u32,
    /// Leases granted and not yet given back, by id.
    leases: HashSet<u64>,
    returned: HashSet<u64>,
    runs: HashMap<TaskId, u32>,
    cancelled: HashSet<TaskId>,
    finished: HashSet<TaskId>,
    /// Finished tasks whose result is in shared memory, which a node can lose.
    in_shared_memory: Vec<TaskId>,
    /// Per actor incarnation and connection: the last call's task and number.
    last_call: HashMap<(u32, u64), (TaskId, u64)>,
}

impl World {
    fn now(&self, base: Instant) -> Instant {
        base + Duration::from_millis(self.now_ms)
    }

    fn take(&mut self, actions: Vec<Action<u32>>) {
        for action in actions {
            match action {
                Action::WatchArgs { task, .. } => self.watched.push(task),
                Action::RequestLease { request, .. } => self.requests.push(request),
                // The node cancels it, or has granted it already: either answer comes.
                Action::WithdrawLease { .. } => {}
                Action::Connect { lease, .. } => self.connecting.push(lease),
                Action::ReturnLease { lease, .. } => {
                    assert!(
                        self.leases.remove(&lease.lease_id),
                        "lease {} returned twice or never granted",
                        lease.lease_id
                    );
                    self.returned.insert(lease.lease_id);
                }
                Action::Push { slot, conn, task, .. } => {
                    assert!(!self.returned.contains(&u64::from(conn)), "pushed to a returned lease");
                    self.ran(task);
                    self.pushed.push((slot, task, conn));
                }
                Action::KillWorker { .. } => {}
                Action::LocateActor { actor, .. } => self.locating.push(actor),
                Action::CallActor { call, spec, .. } => {
                    self.ran(call.task);
                    let seq = spec.actor_task.expect("numbered").seq;
                    if let Some((last_task, last_seq)) = self.last_call.get(&(call.incarnation, call.epoch)) {
                        assert!(call.task > *last_task, "actor calls out of order on one connection");
                        assert_eq!(seq, last_seq + 1, "actor call numbers skip");
                    }
                    self.last_call.insert((call.incarnation, call.epoch), (call.task, seq));
                    self.calls.push(call);
                }
                Action::ExplainLostCall { call, .. } => self.watched.push(call.task),
                Action::Finish(f) => {
                    assert!(self.finished.insert(f.task), "task {} finished twice", f.task);
                    if matches!(f.result, State::Ready(Value::Shm { .. })) {
                        self.in_shared_memory.push(f.task);
                    }
                }
            }
        }
    }

    fn ran(&mut self, task: TaskId) {
        assert!(!self.cancelled.contains(&task), "a cancelled task ran");
        let runs = self.runs.entry(task).or_default();
        *runs += 1;
        let max = self.max_retries[&task];
        assert!(*runs <= max + 1, "task ran {runs} times with max_retries {max}");
    }
}

fn pick<T>(items: &mut Vec<T>, pick: usize) -> Option<T> {
    (!items.is_empty()).then(|| items.remove(pick % items.len()))
}

fn step(s: &mut Sched, w: &mut World, op: Op, base: Instant) {
    let actor = actor_id(1);
    let now = w.now(base);
    let actions = match op {
        Op::Submit { max_retries, actor: to_actor } => {
            w.next_task += 1;
            let max_retries = if to_actor { 0 } else { max_retries };
            let task = new_task(w.next_task, max_retries, to_actor.then_some(actor));
            w.max_retries.insert(task.id, if to_actor { u32::MAX / 2 } else { max_retries });
            s.submit(task)
        }
        Op::ResolveArgs(p) => match pick(&mut w.watched, p) {
            // A watched task waits for arguments, or (lost actor calls) an answer.
            Some(task) if s.to_resolve(&task).is_some() => {
                let mut spec = spec(0);
                spec.task_id = task.0.to_vec().into();
                s.args_resolved(task, Ok(spec))
            }
            Some(task) => s.fail(task, RayError::Internal("explained".into())),
            None => Vec::new(),
        },
        Op::AnswerLease { pick: p, grant } => match pick(&mut w.requests, p) {
            Some(request) if grant => {
                w.next_lease += 1;
                w.leases.insert(w.next_lease);
                s.lease_granted(&key(), request, lease(w.next_lease))
            }
            Some(request) => s.lease_cancelled(&key(), request),
            None => Vec::new(),
        },
        Op::Connect { pick: p, ok } => match pick(&mut w.connecting, p) {
            Some(lease) if ok => {
                let conn = lease.lease_id as u32;
                s.lease_connected(&key(), lease, conn, now)
            }
            Some(lease) => s.lease_unreachable(&key(), lease, RayError::Internal("unreachable".into())),
            None => Vec::new(),
        },
        Op::Reply { pick: p, outcome } => {
            if w.calls.is_empty() || (!w.pushed.is_empty() && p % 2 == 0) {
                match pick(&mut w.pushed, p / 2) {
                    Some((slot, task, _)) => match outcome {
                        0 => s.worker_died(&key(), slot, task, "killed"),
                        1 => {
                            let error = RayError::Task(ray_abi::TaskError {
                                function: "f".into(),
                                message: "panicked".into(),
                                location: None,
                                pid: 1,
                                ip: String::new(),
                                cause: None,
                            });
                            let reply = Reply { result: State::Failed(error), pid: 1, refs: ReplyRefs::default() };
                            s.task_replied(&key(), slot, task, reply, now)
                        }
                        2 => s.task_replied(&key(), slot, task, shm_reply(), now),
                        _ => s.task_replied(&key(), slot, task, ok_reply(), now),
                    },
                    None => Vec::new(),
                }
            } else {
                match pick(&mut w.calls, p / 2) {
                    Some(call) if outcome == 0 => s.actor_call_lost(call, "broken".into()),
                    Some(call) => s.actor_replied(call, ok_reply()),
                    None => Vec::new(),
                }
            }
        }
        Op::Cancel { pick: p, force } => {
            let mut live: Vec<TaskId> = w.max_retries.keys().copied().collect();
            live.sort();
            match live.get(p % live.len().max(1)).copied() {
                Some(task) if !w.finished.contains(&task) => {
                    w.cancelled.insert(task);
                    s.cancel(task, force)
                }
                _ => Vec::new(),
            }
        }
        Op::Locate { pick: p, restart } => match pick(&mut w.locating, p) {
            Some(actor) => {
                w.incarnation += u32::from(restart);
                s.actor_located(actor, located(w.incarnation, 10_000 + w.incarnation, -1))
            }
            None => Vec::new(),
        },
        Op::LoseResult(p) => match pick(&mut w.in_shared_memory, p) {
            Some(task) => match s.rebuild(&ObjectId::new(task, 1)) {
                Some((_, actions)) => {
                    w.finished.remove(&task);
                    actions
                }
                None => Vec::new(),
            },
            None => Vec::new(),
        },
        Op::Idle => {
            w.now_ms += 40;
            s.return_idle_leases(w.now(base))
        }
    };
    w.take(actions);
}

/// Answers everything the scheduler waits for, successfully, until nothing is
/// left; then the process shuts down.
fn drain(s: &mut Sched, w: &mut World, base: Instant) {
    for _ in 0..10_000 {
        let op = if !w.watched.is_empty() {
            Op::ResolveArgs(0)
        } else if !w.requests.is_empty() {
            Op::AnswerLease { pick: 0, grant: true }
        } else if !w.connecting.is_empty() {
            Op::Connect { pick: 0, ok: true }
        } else if !w.locating.is_empty() {
            Op::Locate { pick: 0, restart: false }
        } else if !w.pushed.is_empty() || !w.calls.is_empty() {
            Op::Reply { pick: 0, outcome: 3 }
        } else {
            break;
        };
        step(s, w, op, base);
    }
    w.now_ms += 1_000;
    let idle = s.return_idle_leases(w.now(base));
    w.take(idle);
    let rest = s.shut_down();
    w.take(rest);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Retries (and rebuilds from lineage) never exceed max_retries, a cancelled
    /// task never runs afterwards, actor calls keep their order on every
    /// connection, every task (or rebuild) finishes exactly once, and every
    /// granted lease is given back exactly once.
    #[test]
    fn scheduling_invariants_hold_for_any_sequence_of_events(ops in prop::collection::vec(op(), 1..120)) {
        let base = Instant::now();
        let mut s = sched();
        let mut w = World::default();
        for op in ops {
            step(&mut s, &mut w, op, base);
        }
        drain(&mut s, &mut w, base);
        for task in w.max_retries.keys() {
            prop_assert!(w.finished.contains(task), "task {task} never finished");
        }
        prop_assert!(w.leases.is_empty(), "leases never given back: {:?}", w.leases);
        prop_assert!(s.outstanding().is_empty());
    }
}
