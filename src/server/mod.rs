//! Putting it together: open the Redis pool and the store, start the
//! scheduler, serve gRPC on an already-bound listener, and shut down in a
//! written order. The only module that knows sockets and layers.

mod accept;
mod dashboard;
mod health;
mod layers;
mod metrics;
mod reload;
mod tls;

pub use reload::ReloadTrigger;
pub use tls::TlsError;

use std::{collections::HashMap, future::Future, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{error, info, warn};

use crate::{
    Config,
    access::{AccessFile, AccessFileError, AccessHandle, layer::Gate},
    action::{
        Actions, TaskHandler,
        http::{HttpRunner, HttpSettings},
        redis::{RedisActionSettings, RedisActions, RedisActionsError},
    },
    api::{ApiSettings, TaskApi},
    audit::{AuditError, AuditLog},
    redis_pool::{PoolError, PoolSettings, RedisPool},
    results::stream::StreamGauge,
    scheduler::{FireAhead, Scheduler, SchedulerSettings, clock::Clock},
    secrets::{KeyError, NamedSecrets, SecretKeys, SecretsFileError},
    store::{
        Store,
        memory::{MemoryStore, Retention},
        redis::{RedisSettings, RedisStore},
    },
};

/// Why a server could not start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The config is invalid; nothing was opened.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The Redis pool could not be opened.
    #[error(transparent)]
    Redis(#[from] PoolError),
    /// The task store could not be opened (unreachable, or another format).
    #[error("opening the task store failed: {0}")]
    Store(crate::store::StoreError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The store could not be read at start.
    #[error("starting the scheduler failed: {0}")]
    Scheduler(#[from] crate::scheduler::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A reflection service could not be built.
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The access file cannot be used.
    #[error(transparent)]
    Access(#[from] AccessFileError),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Redis actions cannot be confined as configured.
    #[error(transparent)]
    RedisActions(#[from] RedisActionsError),
    /// The secrets file cannot be used.
    #[error(transparent)]
    Secrets(#[from] SecretsFileError),
    /// A secret key file cannot be used.
    #[error(transparent)]
    SecretKey(#[from] KeyError),
}

/// A server to be run, with its custom task kinds.
pub struct Server {
    /// Every bound; validated when `run` starts, not here, so the builder
    /// methods stay infallible.
    config: Config,
    /// Custom task kinds by name, handed to the actions when `run` starts.
    handlers: HashMap<String, Arc<dyn TaskHandler>>,
    /// The scheduler's time source; tests swap in tokio's paused clock.
    clock: Clock,
    /// Created before `run` so a caller can watch it while the server runs.
    open_streams: StreamGauge,
    /// Pulled to reload the TLS and access files at once.
    reload: ReloadTrigger,
    /// Where `/metrics` is served, if anywhere.
    metrics: Option<TcpListener>,
}

impl Server {
    /// A server with `config` and no custom kinds.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            handlers: HashMap::new(),
            clock: Clock::System,
            open_streams: StreamGauge::default(),
            reload: ReloadTrigger::default(),
            metrics: None,
        }
    }

    /// Serves Prometheus metrics at `/metrics` on `listener` (plain HTTP,
    /// unauthenticated: bind it where only the scraper reaches). The README
    /// lists the series; [`Config::metrics_per_task`] adds per-task ones.
    pub fn metrics(mut self, listener: TcpListener) -> Self {
        self.metrics = Some(listener);
        self
    }

    /// Reloads the TLS and access files when pulled (the binary pulls it on
    /// SIGHUP); they also reload by themselves when they change.
    pub fn reload_trigger(&self) -> ReloadTrigger {
        self.reload.clone()
    }

    /// Registers a custom task kind: tasks with `CustomAction{kind}` run `handler`.
    pub fn handler(mut self, kind: impl Into<String>, handler: impl TaskHandler) -> Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    /// Replaces the clock (tests run the scheduler on tokio's paused clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A live count of open result streams, for monitoring and tests.
    pub fn open_streams(&self) -> StreamGauge {
        self.open_streams.clone()
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down:
    ///
    /// 1. health reports NOT_SERVING (the server as a whole and
    ///    recur.v1.TaskService), so load balancers stop sending calls;
    /// 2. for `shutdown_delay`, everything else goes on as before: calls
    ///    are served, connections accepted, tasks fire. This gives load
    ///    balancers time to see NOT_SERVING and move traffic away before
    ///    calls start failing. [`Server::run_with_signals`] can end it early
    ///    (the binary does on a second SIGINT or SIGTERM);
    /// 3. the gRPC server stops accepting connections and calls (GOAWAY);
    /// 4. the scheduler starts no new run; runs in flight get
    ///    `shutdown_grace` to finish, then their tokens are cancelled and
    ///    they report CANCELLED; their results are recorded and (with the
    ///    Redis store) the log reader hands them to streams, then closes its
    ///    connection;
    /// 5. result streams and health watches end with UNAVAILABLE (results
    ///    with a resume cursor); connections get `connection_drain` to close,
    ///    then the server stops waiting for them;
    /// 6. the Redis pools (the server's, and Redis actions' own with
    ///    `redis_action_url`) are closed, at once: no connection of ours is
    ///    left in `CLIENT LIST` when this returns.
    ///
    /// So shutdown takes at most `shutdown_delay` + `shutdown_grace` +
    /// `connection_drain`, plus a second for Redis to answer QUIT: the sum
    /// to fit under an orchestrator's kill timeout (Kubernetes'
    /// `terminationGracePeriodSeconds`, 30 s by default).
    ///
    /// A `shutdown` that completes during start-up (while waiting for Redis)
    /// ends it at once with `Ok`. An invalid config ([`Config::validate`])
    /// is refused before anything is opened.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        self.run_with_signals(listener, shutdown, std::future::pending())
            .await
    }

    /// [`Server::run`], with `hurry` to end step 2, the shutdown delay,
    /// early. `hurry` is only waited on during the delay and does not shorten
    /// the grace of runs in flight. The steps below are numbered as in
    /// `run`'s documentation.
    pub async fn run_with_signals(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
        hurry: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let config = self.config;
        config.validate()?;
        let local = listener.local_addr();
        if let Ok(addr) = local {
            config.check_exposure(addr)?;
            if config.insecure && !addr.ip().to_canonical().is_loopback() {
                warn!(%addr, "--insecure: serving beyond loopback without TLS or authentication; a proxy or mesh in front must provide both");
            }
        }
        // Read before anything is opened: a bad file is a start-up error.
        let tls = match &config.tls {
            Some(files) => Some((
                files.clone(),
                Arc::new(tls::TlsConfig::new(tls::load(files)?)),
            )),
            None => None,
        };
        let access = AccessHandle::new(match &config.auth_tokens {
            Some(path) => Some(AccessFile::load(path)?),
            None => None,
        });
        let secrets = NamedSecrets::default();
        if let Some(path) = &config.secrets_file {
            secrets.replace(NamedSecrets::load(path)?);
        }
        let secret_keys = SecretKeys::load(&config.secret_key_files)?;
        if let Some(keys) = &secret_keys {
            info!(key_id = %keys.current_id(), "header values are encrypted at rest");
        }
        let audit = match &config.audit_log {
            Some(path) => AuditLog::open(path, config.audit_reads)?,
            None => AuditLog::default(),
        };
        // Without authentication the API is the page's to use; a browser
        // reaching it by a rebindable name is refused (behind --insecure,
        // the proxy in front authenticates and names the host).
        let gate = Gate::new(
            config.authenticates(),
            access.clone(),
            config.open_reflection,
            audit.clone(),
        )
        .refuse_rebound_hosts(config.dashboard && !config.authenticates() && !config.insecure);
        // Finished last, when every call that could write to it is gone.
        let audit_trail = audit.clone();
        tokio::pin!(shutdown);
        let pool = match &config.redis_url {
            Some(url) => {
                let open = RedisPool::open(PoolSettings {
                    url: url.clone(),
                    client_name: format!("recur:{}", config.node_id),
                    size: config.redis_pool_size,
                    connect_timeout: config.redis_connect_timeout,
                    response_timeout: config.redis_response_timeout,
                    startup_window: config.redis_startup_window,
                });
                let pool = tokio::select! {
                    pool = open => pool?,
                    _ = &mut shutdown => {
                        info!("shutdown requested during start-up");
                        return Ok(());
                    }
                };
                info!(node_id = %config.node_id, "redis pool open");
                Some(pool)
            }
            None => None,
        };
        let opened = open_redis_actions(&config, pool.as_ref(), &mut shutdown).await;
        let (action_pool, redis_actions) = match opened {
            Ok(Some(opened)) => opened,
            // Shutdown during start-up (Ok(None)), or an error.
            done => {
                if let Some(pool) = &pool {
                    pool.close().await;
                }
                return done.map(drop);
            }
        };
        let open_streams = self.open_streams;
        let started = self::start(
            config.clone(),
            self.handlers,
            self.clock,
            open_streams.clone(),
            pool.clone(),
            redis_actions,
            Guards {
                gate,
                audit,
                secrets: secrets.clone(),
                secret_keys,
                access: access.clone(),
            },
        )
        .await;
        let Started {
            scheduler,
            router,
            health,
            store_health,
            root,
            streams_shutdown,
        } = match started {
            Ok(started) => started,
            Err(e) => {
                close_pools([pool, action_pool]).await;
                return Err(e);
            }
        };

        let stop_accepting = CancellationToken::new();
        let metrics_endpoint = self.metrics.map(|listener| {
            let exporter = crate::metrics::Exporter::new(
                scheduler.clone(),
                pool.clone(),
                open_streams.clone(),
                config.metrics_per_task,
            );
            metrics::spawn(listener, exporter, stop_accepting.clone())
        });
        let watching = CancellationToken::new();
        tokio::spawn(reload::watch(
            reload::Watched {
                tls: tls.clone(),
                access: config.auth_tokens.clone().map(|path| (path, access)),
                secrets: config.secrets_file.clone().map(|path| (path, secrets)),
            },
            self.reload,
            watching.clone(),
        ));
        let _stop_watching = watching.drop_guard();
        let mut serve = {
            let stop = stop_accepting.clone();
            let stop = async move { stop.cancelled().await };
            let deadline = config.first_byte_timeout;
            match tls {
                Some((_, tls)) => {
                    let incoming = accept::prepared(listener, deadline, tls::handshake(tls));
                    tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop))
                }
                None => {
                    let incoming = accept::prepared(listener, deadline, accept::first_bytes);
                    tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop))
                }
            }
        };
        match local {
            Ok(addr) => info!(%addr, "serving"),
            Err(e) => info!(addr_error = %e, "serving"),
        }

        let mut serve_result = tokio::select! {
            _ = &mut shutdown => None,
            result = &mut serve => Some(result),
        };
        if let Some(result) = &serve_result {
            log_serve_end(result);
        }
        info!("shutting down");
        // 1. The store's status no longer moves the task service's.
        store_health.abort();
        for service in ["", TASK_SERVICE] {
            health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        // 2. Pointless once the gRPC server has ended by itself.
        if serve_result.is_none() && !config.shutdown_delay.is_zero() {
            info!(
                delay_ms = config.shutdown_delay.as_millis() as u64,
                "still serving for the shutdown delay"
            );
            tokio::pin!(hurry);
            tokio::select! {
                _ = tokio::time::sleep(config.shutdown_delay) => {}
                _ = &mut hurry => info!("shutdown delay cut short"),
                result = &mut serve => {
                    log_serve_end(&result);
                    serve_result = Some(result);
                }
            }
        }
        // 3. (/metrics too: it holds the scheduler.)
        stop_accepting.cancel();
        if let Some(endpoint) = metrics_endpoint {
            let _ = endpoint.await;
        }
        // 4.
        scheduler.stop(config.shutdown_grace).await;
        // 5.
        streams_shutdown.cancel();
        if serve_result.is_none() {
            match tokio::time::timeout(config.connection_drain, &mut serve).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "gRPC server ended with an error"),
                Ok(Err(e)) => warn!(error = %e, "gRPC server task failed"),
                Err(_) => {
                    warn!(
                        drain_ms = config.connection_drain.as_millis() as u64,
                        "connections still open, closing them"
                    );
                    serve.abort();
                    let _ = serve.await;
                }
            }
        }
        drop(scheduler);
        root.cancel();
        // 6.
        if pool.is_some() || action_pool.is_some() {
            close_pools([pool, action_pool]).await;
            info!("redis pool closed");
        }
        audit_trail.finish().await;
        info!("shutdown complete");
        match serve_result {
            Some(Ok(Err(e))) => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Logs the gRPC server task ending before shutdown asked it to, as an
/// error: from then on no call is served.
fn log_serve_end(result: &Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>) {
    match result {
        Ok(Ok(())) => error!("gRPC server ended on its own"),
        Ok(Err(e)) => error!(error = %e, "gRPC server failed"),
        Err(e) => error!(error = %e, "gRPC server task failed"),
    }
}

/// Closes the pools that are open, at once, so closing two takes no
/// longer than closing one (shutdown's documented bound counts on it).
async fn close_pools(pools: [Option<RedisPool>; 2]) {
    let closing = pools.into_iter().flatten().map(|pool| async move {
        pool.close().await;
    });
    futures::future::join_all(closing).await;
}

/// Opens what Redis actions run on and reads the commands' key
/// specifications: a pool of their own on `redis_action_url` (typically an
/// ACL user confined to the action prefix), else the server's `pool`.
/// Returns the actions' own pool, for shutdown to close, and None when
/// `shutdown` completed while waiting for Redis. On an error nothing of
/// its own is left open.
async fn open_redis_actions(
    config: &Config,
    pool: Option<&RedisPool>,
    shutdown: impl Future<Output = ()>,
) -> Result<Option<(Option<RedisPool>, Option<RedisActions>)>, ServerError> {
    let action_pool = match &config.redis_action_url {
        Some(url) => {
            let open = RedisPool::open(PoolSettings {
                url: url.clone(),
                client_name: format!("recur:{}:actions", config.node_id),
                size: config.redis_pool_size,
                connect_timeout: config.redis_connect_timeout,
                response_timeout: config.redis_response_timeout,
                startup_window: config.redis_startup_window,
            });
            tokio::select! {
                action_pool = open => Some(action_pool?),
                _ = shutdown => {
                    info!("shutdown requested during start-up");
                    return Ok(None);
                }
            }
        }
        None => None,
    };
    let Some(runs_on) = action_pool.clone().or_else(|| pool.cloned()) else {
        return Ok(Some((None, None)));
    };
    let settings = RedisActionSettings {
        action_prefix: config.redis_action_prefix.clone(),
        own_prefix: config.key_prefix.clone(),
    };
    match RedisActions::open(runs_on, settings).await {
        Ok(actions) => {
            info!(
                own_connection = action_pool.is_some(),
                prefix = config.redis_action_prefix.as_deref().unwrap_or_default(),
                "redis actions ready"
            );
            Ok(Some((action_pool, Some(actions))))
        }
        Err(e) => {
            close_pools([action_pool, None]).await;
            Err(e.into())
        }
    }
}

/// Full name of the task service, as health and reflection know it.
const TASK_SERVICE: &str = "recur.v1.TaskService";

/// The security pieces `run` reads before opening anything and `start`
/// hands to the router, the API, the actions and the store.
struct Guards {
    /// Checks every call's credentials and scope.
    gate: Gate,
    /// The audit trail.
    audit: AuditLog,
    /// Named secrets for `secret_headers`.
    secrets: NamedSecrets,
    /// Keys encrypting header values in the Redis store.
    secret_keys: Option<SecretKeys>,
    /// The access file in force, for quotas.
    access: AccessHandle,
}

/// What `start` hands to `run`.
struct Started {
    /// Stopped in step 4 of shutdown.
    scheduler: Scheduler,
    /// Every service and limit, ready to serve.
    router: layers::Router,
    /// Turned to NOT_SERVING in step 1 of shutdown.
    health: HealthReporter,
    /// Mirrors the store's status into the task service's health until
    /// step 1 of shutdown.
    store_health: tokio::task::JoinHandle<()>,
    /// Parent of every task's token: cancelled last, so nothing outlives `run`.
    root: CancellationToken,
    /// Ends result streams and health watches in step 5 of shutdown.
    streams_shutdown: CancellationToken,
}

/// How often the Redis store is checked: an outage shows in health and a
/// Redis that came back empty is restored within about this long.
const STORE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Builds the store, actions, scheduler and router, then starts the
/// scheduler last, so an error before it leaves nothing running.
async fn start(
    config: Config,
    handlers: HashMap<String, Arc<dyn TaskHandler>>,
    clock: Clock,
    open_streams: StreamGauge,
    pool: Option<RedisPool>,
    redis_actions: Option<RedisActions>,
    guards: Guards,
) -> Result<Started, ServerError> {
    let Guards {
        gate,
        audit,
        secrets,
        secret_keys,
        access,
    } = guards;
    let http = HttpRunner::new(HttpSettings {
        connect_timeout: config.http_connect_timeout,
        read_timeout: config.http_read_timeout,
        total_timeout: config.max_timeout,
        max_redirects: config.max_redirects,
        output_cap: config.output_cap,
        addresses: config.address_policy()?,
        secrets: secrets.clone(),
    })?;
    let actions = Actions::new(http, pool.clone(), handlers, config.output_cap)
        .with_redis_actions(redis_actions);
    let retention = Retention {
        per_task: config.results_per_task,
        total: config.results_total,
        max_bytes: config.results_max_bytes,
    };
    let store: Arc<dyn Store> = match pool {
        Some(pool) => {
            let store = RedisStore::open(
                pool,
                RedisSettings {
                    prefix: config.key_prefix.clone(),
                    shards: config.store_shards,
                    retention,
                    max_age: config.results_max_age,
                    url: config.redis_url.clone().unwrap_or_default(),
                    client_name: format!("recur:{}", config.node_id),
                    // This incarnation: a process restarted under the same
                    // node id must not pass for the one that ran before it.
                    node: format!(
                        "{}/{}",
                        config.node_id,
                        &uuid::Uuid::new_v4().simple().to_string()[..8]
                    ),
                    lease: config.lease,
                    secret_keys,
                },
                crate::api::convert::stored_spec_decoder(
                    config.default_timeout,
                    config.key_prefix.clone(),
                    actions.for_stored_specs(),
                ),
            )
            .await
            .map_err(ServerError::Store)?;
            info!(prefix = %config.key_prefix, epoch = %store.epoch(), "task store is redis");
            Arc::new(store)
        }
        None => {
            warn!("task store is in memory: tasks and results do not survive a restart");
            Arc::new(MemoryStore::new(retention))
        }
    };
    let root = CancellationToken::new();
    let scheduler = Scheduler::new(
        store,
        actions,
        clock,
        SchedulerSettings {
            max_tasks: config.max_tasks,
            terminal_retention: config.terminal_retention,
            subscriber_bound: config.stream_buffer,
            max_runs_in_flight: config.max_runs_in_flight,
            store_check_interval: config.redis_url.as_ref().map(|_| STORE_CHECK_INTERVAL),
            fire_ahead: Some(FireAhead::for_cap(config.max_runs_in_flight)),
            executor: config.node_id.as_str().into(),
        },
        root.clone(),
    );
    let streams_shutdown = CancellationToken::new();
    let api = TaskApi::new(
        scheduler.clone(),
        ApiSettings {
            min_interval: config.min_interval,
            default_timeout: config.default_timeout,
            max_timeout: config.max_timeout,
            key_prefix: config.key_prefix.clone(),
            secrets,
            access,
        },
        config.max_open_streams,
        open_streams,
        streams_shutdown.clone(),
        audit,
    );
    let health = HealthReporter::new();
    health
        .set_service_status(TASK_SERVICE, ServingStatus::Serving)
        .await;
    let router = layers::router(
        &config,
        api,
        health::service(health.clone(), streams_shutdown.clone()),
        gate,
    )?;
    scheduler.start().await?;
    // The task service is only as healthy as its store: a balancer moves
    // callers to a replica whose store answers; the process stays SERVING.
    let mut store_status = scheduler.store_status();
    let reporter = health.clone();
    let store_health = tokio::spawn(async move {
        while store_status.changed().await.is_ok() {
            let serving = *store_status.borrow_and_update();
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(TASK_SERVICE, status).await;
        }
    });
    Ok(Started {
        scheduler,
        router,
        health,
        store_health,
        root,
        streams_shutdown,
    })
}

/// Runs a server with `config` and no custom kinds; see [`Server::run`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    Server::new(config).run(listener, shutdown).await
}
