//! Starting a client: the transfer engine, the contributed segment and its mount, and the
//! liveness ping.

use super::*;

impl Client {
    /// Connects to the metadata service and the master (gRPC), starts the transfer engine
    /// and, when `global_segment_size > 0`, mounts a segment.
    pub async fn setup(config: ClientConfig) -> Result<Self, SetupError> {
        let grpc = GrpcClientConfig {
            auth_token: config.auth_token.clone(),
            ..GrpcClientConfig::default()
        };
        let addr = &config.master_server_addr;
        let master: Arc<dyn MasterApi> = if crate::grpc::is_etcd_master_address(addr) {
            Arc::new(
                crate::grpc::LeaderFollowingClient::connect(
                    addr,
                    &config.cluster_id,
                    grpc,
                    config.master_failover_timeout,
                )
                .await
                .map_err(|code| SetupError::Master {
                    addr: addr.clone(),
                    code,
                })?,
            )
        } else {
            Arc::new(
                GrpcMasterClient::connect(addr, grpc)
                    .await
                    .map_err(|code| SetupError::Master {
                        addr: addr.clone(),
                        code,
                    })?,
            )
        };
        Self::with_master(config, master).await
    }

    /// Like [`Client::setup`] with a given master (e.g. one linked into the process).
    pub async fn with_master(
        config: ClientConfig,
        master: Arc<dyn MasterApi>,
    ) -> Result<Self, SetupError> {
        if config.protocol != "tcp" {
            return Err(SetupError::Protocol(format!(
                "protocol {:?} is not available in this build; use tcp",
                config.protocol
            )));
        }
        // `P2PHANDSHAKE`: no central store; the engine exchanges descriptors itself.
        let metadata = match mooncake_metadata::connect_with(
            &config.metadata_server,
            config.auth_token.clone(),
        ) {
            Ok(m) => Some(m),
            Err(mooncake_metadata::MetadataError::NoCentralStore { .. }) => None,
            Err(source) => {
                return Err(SetupError::Metadata {
                    url: mooncake_metadata::redact(&config.metadata_server),
                    source,
                })
            }
        };
        master
            .connect(crate::ProtocolVersion::CURRENT)
            .await
            .map_err(|code| SetupError::Master {
                addr: config.master_server_addr.clone(),
                code,
            })?;
        let host = config
            .local_hostname
            .split(':')
            .next()
            .unwrap_or("127.0.0.1")
            .to_owned();
        // A durable segment comes back under the name and id it had.
        let previous = match (&config.segment_path, config.global_segment_size) {
            (Some(path), size) if size > 0 => {
                durable::existing(path, size, &config.master_server_addr)
                    .map_err(SetupError::Protocol)?
            }
            _ => None,
        };
        let engine = match &previous {
            Some(p) => {
                let mut again = config.clone();
                again.local_hostname = p.name.clone();
                match start_engine(&again, &host, metadata.clone()).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::info!(name = %p.name, error = %e, "the durable segment's old name is taken; using a new one");
                        start_engine(&config, &host, metadata).await?
                    }
                }
            }
            None => start_engine(&config, &host, metadata).await?,
        };
        let id = ClientId((u128::from(random_u64()) << 64) | u128::from(random_u64()));
        let segment = if config.global_segment_size > 0 {
            let (buffer, attached) = allocate_segment(&engine, &config).await?;
            let segment_id = match (&previous, attached) {
                (Some(p), true) => p.id().unwrap_or(SegmentId(0)),
                _ => SegmentId((u128::from(random_u64()) << 64) | u128::from(random_u64())),
            };
            let seg = Segment {
                id: segment_id,
                name: engine.segment_name().to_owned(),
                base: buffer.addr(),
                size: buffer.len(),
                te_endpoint: engine.segment_name().to_owned(),
                protocol: "tcp".into(),
                host_id: host.clone(),
                durable: config.segment_path.is_some(),
            };
            if let Some(path) = &config.segment_path {
                let identity = durable::Identity {
                    segment_id: format!("{:x}", seg.id.0),
                    name: seg.name.clone(),
                    size: seg.size,
                    master: config.master_server_addr.clone(),
                };
                durable::record(path, &identity).map_err(|e| {
                    SetupError::Protocol(format!(
                        "cannot record the segment beside {}: {e}",
                        path.display()
                    ))
                })?;
                tracing::info!(path = %path.display(), attached, segment = %seg.name, "durable segment");
            }
            master
                .remount_segments(id, vec![seg.clone()])
                .await
                .map_err(|code| SetupError::Master {
                    addr: config.master_server_addr.clone(),
                    code,
                })?;
            Some((seg, buffer))
        } else {
            None
        };
        // Open the disk tier before anything is served: a bad path fails setup clearly.
        let disk = match (&config.disk, &segment) {
            (Some(d), Some(_)) => {
                let d = d.clone();
                let opened = tokio::task::spawn_blocking(move || crate::disk::DiskTier::open(d))
                    .await
                    .map_err(|e| SetupError::Protocol(format!("disk tier: {e}")))??;
                Some(Arc::new(opened.0))
            }
            (Some(_), None) => {
                return Err(SetupError::Protocol(
                    "a disk tier needs a contributed segment (global_segment_size > 0)".into(),
                ))
            }
            _ => None,
        };
        let staging = match config.local_buffer_size {
            0 => None,
            n => Some(Staging::new(engine.allocate_buffer(n, "cpu:0").await?)),
        };
        let (stop, _) = watch::channel(false);
        let client = Self {
            inner: Arc::new(Inner {
                config,
                engine,
                master,
                id,
                segment,
                disk,
                staging,
                locations: Locations::default(),
                checksum_failures: std::sync::atomic::AtomicU64::new(0),
                read_transfer_failures: std::sync::atomic::AtomicU64::new(0),
                sessions: sessions::Sessions::default(),
                slots: slots::SlotPool::default(),
                extras: parking_lot::Mutex::new(Vec::new()),
                loops: std::sync::atomic::AtomicBool::new(false),
                stop,
            }),
        };
        if let Some(tier) = &client.inner.disk {
            disk::mount_tier(&client.inner, tier)
                .await
                .map_err(|code| SetupError::Master {
                    addr: client.inner.config.master_server_addr.clone(),
                    code,
                })?;
            disk::spawn(&client.inner, tier.clone());
        }
        if client.inner.segment.is_some() {
            client
                .inner
                .loops
                .store(true, std::sync::atomic::Ordering::Release);
            let (weak, stop) = (Arc::downgrade(&client.inner), &client.inner.stop);
            tokio::spawn(every_period(weak.clone(), stop.subscribe(), ping));
            tokio::spawn(every_period(weak, stop.subscribe(), |inner| async move {
                Client { inner }.run_tasks().await
            }));
        }
        Ok(client)
    }
}

/// The contributed segment's memory and whether it was re-attached: the durable file of
/// [`ClientConfig::segment_path`]; else shared memory (so same-host readers copy instead of
/// using TCP) when [`ClientConfig::shared_memory`] allows and `/dev/shm` has room; else
/// anonymous memory.
async fn allocate_segment(
    engine: &TransferEngine,
    config: &ClientConfig,
) -> Result<(LocalBuffer, bool), SetupError> {
    let len = config.global_segment_size;
    if let Some(path) = &config.segment_path {
        return Ok(engine.attach_shared_buffer(path, len, "cpu:0").await?);
    }
    if config.shared_memory {
        match engine.allocate_shared_buffer(len, "cpu:0").await {
            Ok(b) => return Ok((b, false)),
            Err(e) => tracing::warn!(
                bytes = len, error = %e,
                "cannot put the segment in shared memory; same-host readers will use TCP"
            ),
        }
    }
    Ok((engine.allocate_buffer(len, "cpu:0").await?, false))
}

/// Starts the engine under `<host>:<port>` with a port from Mooncake's client range
/// (12300-14300), retrying on a name clash.
async fn start_engine(
    config: &ClientConfig,
    host: &str,
    metadata: Option<Arc<dyn mooncake_metadata::MetadataStore>>,
) -> Result<TransferEngine, SetupError> {
    let explicit = config
        .local_hostname
        .contains(':')
        .then(|| config.local_hostname.clone());
    let mut last = None;
    for _ in 0..20 {
        let name = explicit
            .clone()
            .unwrap_or_else(|| format!("{host}:{}", 12_300 + random_u64() % 2_000));
        let engine = EngineConfig {
            auth_token: config.auth_token.clone(),
            ..EngineConfig::new(name)
        };
        let started = match &metadata {
            Some(m) => TransferEngine::start(engine, m.clone()).await,
            None => TransferEngine::start_p2p(engine).await,
        };
        match started {
            Ok(e) => return Ok(e),
            Err(e @ mooncake_transfer_engine::TransferError::InvalidArgument(_))
                if explicit.is_none() =>
            {
                last = Some(e)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or(
        SetupError::Protocol("no free segment name".into()),
        SetupError::Engine,
    ))
}

/// Runs `each` every ping period until the client stops or is dropped.
pub(super) async fn every_period<F, Fut>(
    inner: std::sync::Weak<Inner>,
    mut stop: watch::Receiver<bool>,
    mut each: F,
) where
    F: FnMut(Arc<Inner>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let period = match inner.upgrade() {
        Some(i) => i.config.ping_interval,
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        each(inner).await;
    }
}

/// The liveness heartbeat: a ping, and a remount when the master asks for one.
pub(super) async fn ping(inner: Arc<Inner>) {
    match inner.master.ping(inner.id).await {
        Ok(reply) if reply.status == ClientStatus::NeedRemount => {
            let client = Client {
                inner: inner.clone(),
            };
            let all = client.all_segments();
            if !all.is_empty() {
                tracing::info!(segments = all.len(), "master asked for a remount");
                let remounted = inner.master.remount_segments(inner.id, all).await;
                // The tier right after the segment: until the master knows it, an eviction
                // would drop objects instead of demoting them.
                if let (Ok(()), Some(tier)) = (remounted, &inner.disk) {
                    if let Err(e) = disk::mount_tier(&inner, tier).await {
                        tracing::debug!(error = %e, "disk tier remount failed; the poll retries");
                    }
                }
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "ping failed"),
    }
}
