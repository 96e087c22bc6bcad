//! The life of an HA master: stand by (follow the leader named in etcd), campaign when the
//! view key is vacant, lead for as long as the lease is provably alive, then stand by
//! again.
//!
//! Who campaigns when the key becomes vacant: every master announces its [`Position`]
//! (the term its state comes from and the last batch of it it holds) under
//! `mooncake-store/<cluster_id>/master_candidates/`, the announcements gather for a
//! moment, and the one with the newest state campaigns (ties: the smallest name). If it
//! has not taken over after two lease periods (it died), anyone does: a standby that is
//! behind beats starting empty, and a master with no state (new, or restarted) never
//! beats one with state.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use mooncake_metadata::{AuthToken, EtcdStore, EtcdStoreConfig, LeaseId, MetadataStore};
use mooncake_transfer_engine::conn::Conn;
use parking_lot::RwLock;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tower::ServiceExt;

use super::follower::{follow, FollowEnd};
use super::lease::LeaseClock;
use super::{best_candidate, HaConfig, HaStatus, Position, Replicator, Role, SwitchApi};
use crate::{DurableState, Master, MasterConfig, ServerError};

/// One term of leadership.
#[derive(Debug, Clone)]
struct Term {
    master: Arc<Master>,
    repl: Arc<Replicator>,
    admin: Router,
}

/// An HA master: the election loop, its current term and what the ports show.
#[derive(Debug)]
pub(crate) struct HaNode {
    config: HaConfig,
    master_config: MasterConfig,
    etcd: EtcdStore,
    pub(crate) status: Arc<HaStatus>,
    pub(crate) switch: Arc<SwitchApi>,
    term: RwLock<Option<Term>>,
    auth_token: Option<AuthToken>,
    /// The replication listener, and its abstract Unix socket for standbys on this host.
    listener: parking_lot::Mutex<Option<(TcpListener, Option<UnixListener>)>>,
    /// The replication address published while leading.
    repl_addr: String,
}

impl HaNode {
    /// Binds the replication listener; nothing runs until [`HaNode::run`].
    pub(crate) async fn new(
        config: HaConfig,
        master_config: MasterConfig,
        auth_token: Option<AuthToken>,
    ) -> Result<Arc<Self>, ServerError> {
        let step = config.lease_ttl / 3;
        let etcd = EtcdStore::new(
            &config.etcd,
            EtcdStoreConfig {
                connect_timeout: step.max(Duration::from_millis(200)),
                request_timeout: step.max(Duration::from_millis(200)),
            },
        )
        .map_err(|e| ServerError::Serve {
            what: "ha election",
            reason: e.to_string(),
        })?;
        let listener = TcpListener::bind(&config.replication_addr)
            .await
            .map_err(|source| ServerError::Bind {
                what: "replication listener",
                addr: config.replication_addr.clone(),
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| ServerError::Bind {
            what: "replication listener",
            addr: config.replication_addr.clone(),
            source,
        })?;
        let host = if bound.ip().is_unspecified() {
            config
                .advertise_rpc
                .rsplit_once(':')
                .map_or("127.0.0.1", |(h, _)| h)
                .to_owned()
        } else {
            bound.ip().to_string()
        };
        let repl_addr = format!("{host}:{}", bound.port());
        let local = super::wire::local_listener(bound.port());
        Ok(Arc::new(Self {
            config,
            master_config,
            etcd,
            status: Arc::new(HaStatus::default()),
            switch: Arc::new(SwitchApi::default()),
            term: RwLock::new(None),
            auth_token,
            listener: parking_lot::Mutex::new(Some((listener, local))),
            repl_addr,
        }))
    }

    /// The address standbys reach this node's replication stream at while it leads.
    pub(crate) fn replication_addr(&self) -> &str {
        &self.repl_addr
    }

    fn term(&self) -> Option<Term> {
        self.term.read().clone()
    }

    /// Runs the election loop until `shutdown`; a leader then revokes its lease, so a
    /// standby takes over at once.
    pub(crate) async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        let (stop_tx, stop) = watch::channel(false);
        if let Some((listener, local)) = self.listener.lock().take() {
            tokio::spawn(self.clone().accept(listener, local, stop.clone()));
        }
        let me = self.clone();
        let election = tokio::spawn(async move { me.elect(stop).await });
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = election.await;
    }

    async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        local: Option<UnixListener>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let conn = tokio::select! {
                conn = listener.accept() => {
                    let Ok((stream, peer)) = conn else { continue };
                    let _ = stream.set_nodelay(true);
                    Conn::tcp(stream).map(|c| (c, peer.to_string()))
                }
                // Invariant: polled only when `local` is `Some`.
                conn = async { local.as_ref().expect("guarded").accept().await }, if local.is_some() => {
                    let Ok((stream, _)) = conn else { continue };
                    Conn::unix(stream).map(|c| (c, "local socket".to_owned()))
                }
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok((conn, peer)) = conn else { continue };
            match self.term() {
                Some(t) => {
                    tokio::spawn(t.repl.clone().serve(
                        t.master.clone(),
                        conn,
                        peer,
                        self.config.advertise_rpc.clone(),
                    ));
                }
                // Not leading: the standby looks the leader up again.
                None => drop(conn),
            }
        }
    }

    async fn elect(&self, mut stop: watch::Receiver<bool>) {
        let view_key = self.config.view_key();
        let repl_key = self.config.replication_key();
        let mut state = DurableState::default();
        let mut position = Position::default();
        let mut vacant_since: Option<Instant> = None;
        // This master's announcement while the key is vacant: its lease and when.
        let mut candidacy: Option<(LeaseId, Instant)> = None;
        let mut last_error = String::new();
        // Longer than a loaded leader's pause between heartbeats; a standby that hears
        // nothing for this long stops counting itself in sync.
        let silence = self.config.replication_timeout.max(Duration::from_secs(1));
        let ttl = self.config.lease_ttl;
        while !*stop.borrow() {
            let view = match self.etcd.get_versioned(&view_key).await {
                Ok(v) => v,
                Err(e) => {
                    let text = e.to_string();
                    if text != last_error {
                        tracing::warn!(error = %text, "cannot read the master view from etcd");
                        last_error = text;
                    }
                    pause(&mut stop, Duration::from_millis(250)).await;
                    continue;
                }
            };
            let Some(view) = view else {
                last_error.clear();
                let since = *vacant_since.get_or_insert_with(Instant::now);
                // Announce this master's position (again every half lease while the key
                // stays vacant), let the announcements gather, then the master with the
                // newest state campaigns; anyone does once the vacancy outlasts two leases
                // (the best one died).
                if candidacy.is_none_or(|(_, at)| at.elapsed() >= ttl / 2) {
                    let old = candidacy.take();
                    match self.announce(position).await {
                        Ok(lease) => candidacy = Some((lease, Instant::now())),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot announce this master's candidacy")
                        }
                    }
                    if let Some((lease, _)) = old {
                        let _ = self.etcd.revoke_lease(lease).await;
                    }
                    if candidacy.is_some_and(|(_, at)| at.elapsed() < ttl / 2)
                        && since.elapsed() < ttl / 2
                    {
                        pause(&mut stop, (ttl / 6).min(Duration::from_millis(300))).await;
                        continue;
                    }
                }
                let best = self.best_candidate().await;
                if best.as_deref() == Some(self.config.advertise_rpc.as_str())
                    || since.elapsed() >= ttl * 2
                {
                    if let Some((lease, _)) = candidacy.take() {
                        let _ = self.etcd.revoke_lease(lease).await;
                    }
                    self.campaign(&mut state, &mut position, since, &mut stop)
                        .await;
                } else {
                    pause(&mut stop, Duration::from_millis(50)).await;
                }
                continue;
            };
            vacant_since = None;
            if let Some((lease, _)) = candidacy.take() {
                let _ = self.etcd.revoke_lease(lease).await;
            }
            let leader = String::from_utf8_lossy(&view.value).trim().to_owned();
            self.status.see_leader(&leader);
            if leader == self.config.advertise_rpc {
                // The lease of an earlier incarnation of this master: wait for it to expire.
                pause(&mut stop, Duration::from_millis(250)).await;
                continue;
            }
            let repl = match self.etcd.get(&repl_key).await {
                Ok(Some(a)) => String::from_utf8_lossy(&a).trim().to_owned(),
                _ => {
                    pause(&mut stop, Duration::from_millis(100)).await;
                    continue;
                }
            };
            let end = tokio::select! {
                end = follow(
                    &repl,
                    &self.config.advertise_rpc,
                    view.create_revision,
                    &mut state,
                    &mut position,
                    &self.status,
                    silence,
                ) => end,
                _ = stop.wait_for(|s| *s) => return,
            };
            match end {
                // Said once per reason: a leader being replaced refuses many times.
                FollowEnd::Closed(why) if why != last_error => {
                    tracing::info!(leader = %leader, reason = %why, "not following the leader");
                    last_error = why;
                }
                FollowEnd::Closed(_) => {}
                FollowEnd::Silent => {
                    tracing::warn!(leader = %leader, ?silence, "the leader went silent; this standby is no longer in sync")
                }
            }
            pause(&mut stop, Duration::from_millis(50)).await;
        }
    }

    /// Announces this master's position under the candidates' prefix, on a lease of its
    /// own (gone with this master).
    async fn announce(
        &self,
        position: Position,
    ) -> Result<LeaseId, mooncake_metadata::MetadataError> {
        let (lease, _) = self.etcd.grant_lease(self.config.lease_ttl).await?;
        let key = format!(
            "{}{}",
            self.config.candidates_prefix(),
            self.config.advertise_rpc
        );
        self.etcd
            .put_with_lease(&key, Bytes::from(position.encode()), lease)
            .await?;
        Ok(lease)
    }

    /// The announced candidate that should lead (the newest state).
    async fn best_candidate(&self) -> Option<String> {
        let prefix = self.config.candidates_prefix();
        let listed = self.etcd.list_prefix(&prefix).await.ok()?;
        let candidates: Vec<(String, Position)> = listed
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(&prefix)?.to_owned();
                Some((name, Position::decode(&String::from_utf8_lossy(&v))?))
            })
            .collect();
        best_candidate(&candidates).map(str::to_owned)
    }

    /// Tries to become the leader; on success leads until the term ends.
    async fn campaign(
        &self,
        state: &mut DurableState,
        position: &mut Position,
        vacant_since: Instant,
        stop: &mut watch::Receiver<bool>,
    ) {
        let ttl = self.config.lease_ttl;
        let sent = Instant::now();
        let (lease, granted) = match self.etcd.grant_lease(ttl).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot get an etcd lease to campaign");
                pause(stop, Duration::from_millis(250)).await;
                return;
            }
        };
        let won = self
            .etcd
            .create_with_lease(
                &self.config.view_key(),
                Bytes::from(self.config.advertise_rpc.clone()),
                lease,
            )
            .await;
        let term = match won {
            Ok(Ok(revision)) => revision,
            Ok(Err(_)) | Err(_) => {
                let _ = self.etcd.revoke_lease(lease).await;
                return;
            }
        };
        if let Err(e) = self
            .etcd
            .put_with_lease(
                &self.config.replication_key(),
                Bytes::from(self.repl_addr.clone()),
                lease,
            )
            .await
        {
            tracing::warn!(error = %e, "cannot publish the replication address; standbys will start cold");
        }
        // The TTL etcd granted, never more: the clock must not outlive the lease.
        let ttl = granted.min(ttl);
        let clock = LeaseClock::granted(sent, ttl, ttl / 3);
        let (kept, seq) = self
            .lead(lease, clock, std::mem::take(state), vacant_since, stop)
            .await;
        *state = kept;
        *position = Position { term, seq };
    }

    /// Leads one term: restores `state` (on a blocking thread, while the lease is kept
    /// alive), serves, keeps the lease, and steps down when it can no longer prove the
    /// lease alive or on shutdown. Returns the term's final state, which this node keeps as
    /// a standby (it is the newest there is).
    async fn lead(
        &self,
        lease: LeaseId,
        mut clock: LeaseClock,
        state: DurableState,
        vacant_since: Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> (DurableState, u64) {
        let repl = Arc::new(Replicator::new(
            self.config.replication_timeout,
            self.config.sync_replication,
        ));
        let mut building = Some(tokio::task::spawn_blocking({
            let (config, grace, repl) = (
                self.master_config.clone(),
                self.config.restore_grace,
                repl.clone(),
            );
            move || Master::promote(config, state, grace, repl)
        }));
        let mut term: Option<(Arc<Master>, watch::Sender<bool>)> = None;
        let every = self.config.lease_ttl / 3;
        let mut next_renewal = Instant::now();
        let mut shutting_down = false;
        let why = loop {
            let deadline = clock.step_down_at(Instant::now());
            if Instant::now() >= deadline {
                break "the lease could not be renewed in time";
            }
            let mut stop_renewing = stop.clone();
            tokio::select! {
                built = async { building.as_mut().expect("guarded").await }, if building.is_some() => {
                    building = None;
                    match built {
                        Ok(master) => term = Some(self.start_term(master, &repl, &clock, vacant_since)),
                        Err(e) => break if e.is_panic() { "the restore panicked" } else { "the restore was cancelled" },
                    }
                }
                () = tokio::time::sleep_until(next_renewal.into()) => {
                    let sent = Instant::now();
                    let renewed = tokio::select! {
                        r = self.renew(lease) => r,
                        () = tokio::time::sleep_until(deadline.into()) => break "the lease could not be renewed in time",
                        () = async { let _ = stop_renewing.wait_for(|s| *s).await; } => { shutting_down = true; break "shutting down" }
                    };
                    match renewed {
                        Ok(Some(ttl)) => {
                            clock.renewed(sent, Some(ttl));
                            self.switch.extend(clock.step_down_at(Instant::now()));
                            next_renewal = Instant::now() + every;
                        }
                        Ok(None) => {
                            clock.lost();
                            break "the lease or the view key is gone";
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot renew the leader lease");
                            next_renewal = Instant::now() + Duration::from_millis(100);
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => break "the lease could not be renewed in time",
                () = async { let _ = stop.wait_for(|s| *s).await; } => { shutting_down = true; break "shutting down" }
            }
        };
        // Stop serving first, then let the standbys go.
        self.switch.set(None, Instant::now());
        *self.term.write() = None;
        repl.close();
        if shutting_down {
            tracing::info!("leader shutting down; revoking its lease so a standby takes over now");
        } else {
            tracing::warn!(reason = why, "this master stepped down");
        }
        // Best effort: with etcd reachable, the key goes at once instead of at expiry.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.etcd.revoke_lease(lease)).await;
        let master = match (term, building) {
            (Some((master, ticker)), _) => {
                let _ = ticker.send(true);
                Some(master)
            }
            (None, Some(b)) => b.await.ok(),
            (None, None) => None,
        };
        let seq = repl.last_seq();
        let Some(master) = master else {
            // The restore failed: nothing is held.
            self.status.synced.store(false, Ordering::Release);
            return (DurableState::default(), 0);
        };
        let kept = tokio::task::spawn_blocking(move || {
            master
                .raw_core()
                .lock()
                .snapshot()
                .into_iter()
                .collect::<DurableState>()
        })
        .await
        .unwrap_or_default();
        // Everything this term answered is in it: it may take over again at once.
        self.status.synced.store(true, Ordering::Release);
        self.status
            .standby_objects
            .store(kept.object_count() as u64, Ordering::Relaxed);
        (kept, seq)
    }

    /// Starts serving with `master`: the switch, the admin routes, the ticker.
    fn start_term(
        &self,
        master: Arc<Master>,
        repl: &Arc<Replicator>,
        clock: &LeaseClock,
        vacant_since: Instant,
    ) -> (Arc<Master>, watch::Sender<bool>) {
        let admin = crate::server::admin_router(master.clone(), self.auth_token.clone());
        *self.term.write() = Some(Term {
            master: master.clone(),
            repl: repl.clone(),
            admin,
        });
        self.switch
            .set(Some(master.clone()), clock.step_down_at(Instant::now()));
        self.status.synced.store(false, Ordering::Release);
        self.status.terms.fetch_add(1, Ordering::Relaxed);
        self.status.see_leader(&self.config.advertise_rpc);
        let takeover = vacant_since.elapsed();
        self.status
            .takeover_ms
            .store(takeover.as_millis() as u64, Ordering::Relaxed);
        tracing::info!(
            rpc = %self.config.advertise_rpc,
            replication = %self.repl_addr,
            takeover_ms = takeover.as_millis() as u64,
            "this master leads"
        );
        let (ticker, rx) = watch::channel(false);
        tokio::spawn({
            let master = master.clone();
            let mut rx = rx;
            async move {
                master
                    .run_ticker(Duration::from_millis(10), async move {
                        let _ = rx.wait_for(|s| *s).await;
                    })
                    .await;
            }
        });
        (master, ticker)
    }

    /// Renews the lease and checks the view key still names this master on it.
    async fn renew(
        &self,
        lease: LeaseId,
    ) -> Result<Option<Duration>, mooncake_metadata::MetadataError> {
        let Some(ttl) = self.etcd.keep_alive(lease).await? else {
            return Ok(None);
        };
        match self.etcd.get_versioned(&self.config.view_key()).await? {
            Some(v) if v.lease == lease => Ok(Some(ttl)),
            _ => Ok(None),
        }
    }

    /// The metrics port in HA mode: `/role`, `/ha_status`, `/leader`, `/ready`, `/health`
    /// and `/metrics` always; every other route is the leader's (`admin_router`), or 503
    /// with Mooncake's `-1011` while standing by.
    pub(crate) fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/role",
                get(|State(n): State<Arc<HaNode>>| async move { format!("{}\n", n.role().name()) }),
            )
            .route(
                "/leader",
                get(|State(n): State<Arc<HaNode>>| async move { format!("{}\n", n.status.leader()) }),
            )
            .route("/ready", get(ready))
            .route("/health", get(|| async { "OK" }))
            .route("/ha_status", get(ha_status))
            .route("/metrics", get(metrics))
            .fallback(forward)
            .with_state(self.clone())
    }

    fn role(&self) -> Role {
        if self.switch.serving() {
            Role::Leader
        } else {
            Role::Standby
        }
    }

    /// Prometheus text of the HA state (and the leader's own metrics while leading).
    pub(crate) fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = match self.term() {
            Some(t) => t.master.render_metrics(),
            None => String::new(),
        };
        let (standbys, (lag_entries, lag_seconds), (waits, waited)) = match self.term() {
            Some(t) => (
                t.repl.followers().iter().filter(|f| f.in_sync).count() as u64,
                t.repl.lag(),
                t.repl.waits(),
            ),
            None => (0, (0, 0.0), (0, 0.0)),
        };
        let s = &self.status;
        let gauges: [(&str, &str, f64); 7] = [
            (
                "master_ha_is_leader",
                "gauge",
                f64::from(u8::from(self.role() == Role::Leader)),
            ),
            (
                "master_ha_standby_in_sync",
                "gauge",
                f64::from(u8::from(s.synced.load(Ordering::Relaxed))),
            ),
            (
                "master_ha_standby_objects",
                "gauge",
                s.standby_objects.load(Ordering::Relaxed) as f64,
            ),
            (
                "master_ha_last_takeover_seconds",
                "gauge",
                s.takeover_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            ),
            (
                "master_replication_standbys_in_sync",
                "gauge",
                standbys as f64,
            ),
            (
                "master_replication_lag_entries",
                "gauge",
                lag_entries as f64,
            ),
            ("master_replication_lag_seconds", "gauge", lag_seconds),
        ];
        for (name, kind, v) in gauges {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {v}");
        }
        let counters = [
            (
                "master_ha_leader_changes_total",
                s.leader_changes.load(Ordering::Relaxed),
            ),
            ("master_ha_terms_total", s.terms.load(Ordering::Relaxed)),
            (
                "master_ha_standby_applied_batches_total",
                s.applied.load(Ordering::Relaxed),
            ),
            ("master_replication_waits_total", waits),
        ];
        for (name, v) in counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
        }
        let _ = writeln!(
            out,
            "# TYPE master_replication_wait_seconds_total counter\nmaster_replication_wait_seconds_total {waited}"
        );
        out
    }
}

/// Sleeps `d` unless the node is stopping.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

async fn ready(State(n): State<Arc<HaNode>>) -> Response {
    if n.role() == Role::Leader {
        (StatusCode::OK, "ready: leader\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: standby\n").into_response()
    }
}

async fn metrics(State(n): State<Arc<HaNode>>) -> String {
    n.render_metrics()
}

async fn ha_status(State(n): State<Arc<HaNode>>) -> Response {
    let followers = n.term().map(|t| t.repl.followers()).unwrap_or_default();
    let lag = n.term().map_or((0, 0.0), |t| t.repl.lag());
    let body = serde_json::json!({
        "role": n.role().name(),
        "leader": n.status.leader(),
        "self": n.config.advertise_rpc,
        "cluster_id": n.config.cluster_id,
        "replication_address": n.repl_addr,
        "lease_ttl_sec": n.config.lease_ttl.as_secs_f64(),
        "standby_in_sync": n.status.synced.load(Ordering::Relaxed),
        "standby_objects": n.status.standby_objects.load(Ordering::Relaxed),
        "leader_changes": n.status.leader_changes.load(Ordering::Relaxed),
        "terms": n.status.terms.load(Ordering::Relaxed),
        "standbys": followers,
        "replication_lag_entries": lag.0,
        "replication_lag_seconds": lag.1,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn forward(State(n): State<Arc<HaNode>>, req: Request<Body>) -> Response {
    match n.term() {
        Some(t) if n.switch.serving() => match t.admin.oneshot(req).await {
            Ok(r) => r.into_response(),
            Err(e) => match e {},
        },
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            format!(
                "{{\"success\":false,\"error_code\":{},\"error_message\":\"service plane is not active\"}}",
                mooncake_store::ErrorCode::UnavailableInCurrentMode.code()
            ),
        )
            .into_response(),
    }
}
