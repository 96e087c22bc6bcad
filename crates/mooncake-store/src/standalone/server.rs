//! The store service side: accepts thin clients on the abstract socket, maps each one's
//! pool and serves its requests with the service's own [`Client`].

#[allow(clippy::wildcard_imports)]
use super::*;

/// Serves thin clients on the abstract Unix socket `name` with `client` until the task is
/// dropped. Each connection maps its client's pool, registers it, and unregisters it when
/// the client goes.
pub async fn serve_standalone(name: String, client: Client) -> std::io::Result<()> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    std_listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std_listener)?;
    tracing::info!(socket = %format!("@{name}"), "serving standalone (setup_dummy) clients");
    // Connections are owned here: dropping this future stops every one of them.
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_STANDALONE_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let (stream, _) = listener.accept().await?;
        let client = client.clone();
        let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
        conns.spawn(async move {
            let served = match Conn::unix(stream) {
                Ok(conn) => serve_connection(conn, client, peer_uid).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "standalone client connection ended");
            }
            drop(permit);
        });
    }
}

/// Thin clients served at once by one store service (further ones wait in the backlog).
pub(super) const MAX_STANDALONE_CONNECTIONS: usize = 1024;

/// Sends a refusal as the answer to a hello.
pub(super) async fn refuse(s: &Conn, code: ErrorCode, text: String) -> std::io::Result<()> {
    let reply = Reply {
        codes: vec![code.code().into()],
        text,
    };
    write_frame(s, &serde_json::to_vec(&reply)?).await
}

pub(super) async fn serve_connection(
    s: Conn,
    client: Client,
    peer_uid: Option<u32>,
) -> std::io::Result<()> {
    let hello: Request =
        serde_json::from_slice(&read_frame(&s).await?).map_err(std::io::Error::other)?;
    let Request::Hello { pool, size, token } = hello else {
        return Err(std::io::Error::other("the first request must be hello"));
    };
    // Only processes of this service's user may use it (and share memory with it).
    let me = mooncake_transfer_engine::effective_uid();
    if peer_uid != Some(me) {
        tracing::warn!(peer_uid, "refused a standalone client of another user");
        let text = format!(
            "the store service runs as uid {me}; a client of uid {} may not use it",
            peer_uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string())
        );
        return refuse(&s, ErrorCode::InvalidParams, text).await;
    }
    let required = client.config().auth_token.as_ref();
    if !AuthToken::admits(required, token.as_deref().map(str::as_bytes)) {
        tracing::warn!("refused a standalone client: authentication failed");
        let text = "authentication failed: the store service needs the cluster's token (MOONCAKE_AUTH_TOKEN)".to_owned();
        return refuse(&s, ErrorCode::RpcFail, text).await;
    }
    let engine = client.engine().clone();
    let buffer = match engine.register_shared_file(&pool, size, "cpu:0").await {
        Ok(b) => b,
        Err(e) => {
            let text = format!("cannot map {}: {e}", pool.display());
            return refuse(&s, ErrorCode::InvalidParams, text).await;
        }
    };
    write_frame(&s, &serde_json::to_vec(&Reply::default())?).await?;
    let base = buffer.addr();
    let result = async {
        loop {
            let frame = match read_request(&s).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            };
            let req: Request = serde_json::from_slice(&frame).map_err(std::io::Error::other)?;
            let reply = handle(&client, base, size, req).await;
            write_frame(&s, &serde_json::to_vec(&reply)?).await?;
        }
    }
    .await;
    let _ = engine.unregister(base).await;
    drop(buffer);
    result
}

/// Pool ranges to addresses in this process; `None` if any range leaves the pool.
pub(super) fn addresses(base: u64, size: u64, ranges: &[(u64, u64)]) -> Option<Vec<(u64, u64)>> {
    ranges
        .iter()
        .map(|&(off, len)| (off.checked_add(len)? <= size).then_some((base + off, len)))
        .collect()
}

pub(super) async fn handle(client: &Client, base: u64, size: u64, req: Request) -> Reply {
    let invalid = i64::from(ErrorCode::InvalidParams.code());
    let codes = match req {
        Request::Hello { .. } => vec![invalid],
        Request::Put {
            items,
            upsert,
            config,
        } => {
            let config = ReplicateConfig::from(config);
            let mut mapped = Vec::with_capacity(items.len());
            let mut bad = Vec::new();
            for (i, (k, r)) in items.iter().enumerate() {
                match addresses(base, size, r) {
                    Some(a) => mapped.push((k.as_str(), a)),
                    None => bad.push(i),
                }
            }
            if !bad.is_empty() {
                vec![invalid; items.len()]
            } else if mapped.len() == 1 {
                let (k, a) = &mapped[0];
                vec![code(
                    &client.put_parts_from(k, a, &config, upsert).await,
                    |_| 0,
                )]
            } else {
                client
                    .batch_put_parts_from(&mapped, &config, upsert)
                    .await
                    .iter()
                    .map(|r| code(r, |_| 0))
                    .collect()
            }
        }
        Request::GetInto { items } => {
            let mut out = vec![invalid; items.len()];
            let mut ok = Vec::new();
            let mut idx = Vec::new();
            for (i, (k, off, cap)) in items.iter().enumerate() {
                if let Some(a) = addresses(base, size, &[(*off, *cap)]) {
                    ok.push((k.as_str(), a[0].0, *cap));
                    idx.push(i);
                }
            }
            let got = if ok.len() == 1 {
                vec![client.get_into(ok[0].0, ok[0].1, ok[0].2).await]
            } else {
                client.batch_get_into(&ok).await
            };
            for (i, r) in idx.into_iter().zip(got) {
                out[i] = code(&r, |n| *n as i64);
            }
            out
        }
        Request::GetIntoParts { items } => {
            let mut out = vec![invalid; items.len()];
            let mut ok = Vec::new();
            let mut idx = Vec::new();
            for (i, (k, r)) in items.iter().enumerate() {
                if let Some(a) = addresses(base, size, r) {
                    ok.push((k.as_str(), a));
                    idx.push(i);
                }
            }
            for (i, r) in idx.into_iter().zip(client.batch_get_into_parts(&ok).await) {
                out[i] = code(&r, |n| *n as i64);
            }
            out
        }
        Request::IsExist { keys } => client
            .batch_is_exist(&keys)
            .await
            .iter()
            .map(|r| code(r, |b| i64::from(*b)))
            .collect(),
        Request::GetSize { key } => vec![code(&client.get_size(&key).await, |n| *n as i64)],
        Request::Remove { keys, force } => client
            .batch_remove(&keys, force)
            .await
            .iter()
            .map(|r| code(r, |_| 0))
            .collect(),
        Request::RemoveAll { force } => {
            vec![code(&client.remove_all(force).await, |n| *n as i64)]
        }
        Request::ReadRanges { items } => {
            // Fragments outside the pool are refused here; the rest are read into the
            // pool's mapping in this process. One code per fragment, flattened.
            let mut valid = Vec::with_capacity(items.len());
            let mut spots = Vec::new();
            let mut out = Vec::new();
            for (k, frags) in items {
                let mut ok = Vec::with_capacity(frags.len());
                for (off, len, src) in frags {
                    if let Some(a) = addresses(base, size, &[(off, len)]) {
                        ok.push((a[0].0, len, src));
                        spots.push(out.len());
                    }
                    out.push(invalid);
                }
                valid.push((k, ok));
            }
            let read = client.read_ranges(&valid).await;
            for (spot, r) in spots.into_iter().zip(read.into_iter().flatten()) {
                out[spot] = r;
            }
            out
        }
        Request::RemoveByRegex { pattern, force } => {
            vec![code(&client.remove_by_regex(&pattern, force).await, |n| {
                *n as i64
            })]
        }
        Request::CreateCopyTask { key, targets } => {
            return task_reply(client.create_copy_task(&key, &targets).await)
        }
        Request::CreateMoveTask {
            key,
            source,
            target,
        } => return task_reply(client.create_move_task(&key, &source, &target).await),
        Request::QueryTask { id_hi, id_lo } => {
            return match client.query_task(TaskId::from_halves(id_hi, id_lo)).await {
                Ok(t) => Reply {
                    codes: encode_task(&t),
                    text: t.message,
                },
                Err(e) => Reply {
                    codes: vec![e.code().into()],
                    text: String::new(),
                },
            }
        }
        Request::Hostname => {
            return Reply {
                codes: vec![0],
                text: client.engine().segment_name().to_owned(),
            }
        }
    };
    Reply {
        codes,
        text: String::new(),
    }
}
