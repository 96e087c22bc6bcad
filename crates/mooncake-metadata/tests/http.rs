//! The HTTP metadata server and client over real sockets: Mooncake's exact status codes and
//! bodies, bad input, unreachable and failing servers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use mooncake_metadata::{
    HttpMetadataServer, HttpMetadataServerConfig, HttpStore, HttpStoreConfig, MetadataError,
    MetadataStore,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts a server on 127.0.0.1:0; the server stops when the runtime ends.
async fn start_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpMetadataServer::new(HttpMetadataServerConfig {
        max_value_size: 4 << 20,
        auth_token: None,
    });
    tokio::spawn(server.run(listener, std::future::pending()));
    addr
}

/// Sends one raw HTTP/1.1 request and returns (status, body).
async fn raw(addr: std::net::SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn server_answers_exactly_like_mooncake() {
    let a = start_server().await;
    let k = "/metadata?key=mooncake%2Fram%2F127.0.0.1%3A17101";
    assert_eq!(
        raw(a, "GET", k, b"").await,
        (404, "metadata not found".into())
    );
    assert_eq!(
        raw(a, "PUT", k, b"{\"a\":1}").await,
        (200, "metadata updated".into())
    );
    assert_eq!(raw(a, "GET", k, b"").await, (200, "{\"a\":1}".into()));
    assert_eq!(
        raw(a, "DELETE", k, b"").await,
        (200, "metadata deleted".into())
    );
    assert_eq!(
        raw(a, "DELETE", k, b"").await,
        (404, "metadata not found".into())
    );
    assert_eq!(
        raw(a, "GET", "/metadata", b"").await,
        (400, "Missing key parameter".into())
    );
    assert_eq!(
        raw(a, "PUT", "/metadata?key=", b"x").await,
        (400, "Missing key parameter".into())
    );
    assert_eq!(raw(a, "DELETE", "/metadata?other=1", b"").await.0, 400);
    assert_eq!(raw(a, "POST", k, b"{}").await.0, 404);
    assert_eq!(raw(a, "GET", "/elsewhere?key=a", b"").await.0, 404);
    assert_eq!(raw(a, "GET", "/health", b"").await, (200, "OK".into()));
    let rpc = "/metadata?key=mooncake%2Frpc_meta%2Fseg";
    assert_eq!(
        raw(a, "PUT", rpc, b"{\"p\":1}").await,
        (200, "metadata updated".into())
    );
    assert_eq!(
        raw(a, "PUT", rpc, b"{\"p\":1}").await,
        (200, "metadata unchanged".into())
    );
    assert_eq!(
        raw(a, "PUT", rpc, b"{\"p\":2}").await,
        (400, "Duplicate rpc_meta key not allowed".into())
    );
    assert_eq!(raw(a, "GET", rpc, b"").await, (200, "{\"p\":1}".into()));
}

#[tokio::test]
async fn server_reads_keys_escaped_by_the_client() {
    let a = start_server().await;
    let store =
        HttpStore::new(&format!("http://{a}/metadata"), HttpStoreConfig::default()).unwrap();
    for key in ["with space", "q?x=1", "a&b=c", "100%", "plus+sign"] {
        store.put(key, Bytes::from(key.to_owned())).await.unwrap();
        assert_eq!(
            store.get(key).await.unwrap(),
            Some(Bytes::from(key.to_owned())),
            "{key}"
        );
    }
    // What curl would send for "with space" reaches the same entry.
    assert_eq!(
        raw(a, "GET", "/metadata?key=with%20space", b"").await,
        (200, "with space".into())
    );
    // The literal escape sequence is a different key.
    assert_eq!(
        raw(a, "GET", "/metadata?key=with%2520space", b"").await.0,
        404
    );
}

#[tokio::test]
async fn server_binds_only_the_given_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    let server = HttpMetadataServer::new(HttpMetadataServerConfig::default());
    tokio::spawn(server.run(listener, std::future::pending()));
    assert_eq!(raw(addr, "GET", "/health", b"").await.0, 200);
}

#[tokio::test]
async fn oversized_values_are_refused_with_413_and_change_nothing() {
    let a = start_server().await;
    let store =
        HttpStore::new(&format!("http://{a}/metadata"), HttpStoreConfig::default()).unwrap();
    store.put("k", Bytes::from_static(b"old")).await.unwrap();
    let err = store
        .put("k", Bytes::from(vec![b'x'; 5 << 20]))
        .await
        .unwrap_err();
    match err {
        MetadataError::Status { status, method, .. } => assert_eq!((status, method), (413, "PUT")),
        other => panic!("expected 413, got {other:?}"),
    }
    assert_eq!(
        store.get("k").await.unwrap(),
        Some(Bytes::from_static(b"old"))
    );
}

#[tokio::test]
async fn refused_connection_names_the_url_quickly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/metadata");
    let store = HttpStore::new(&url, HttpStoreConfig::default()).unwrap();
    let start = Instant::now();
    let err = store.get("mooncake/ram/x").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(3));
    match &err {
        MetadataError::Unreachable { url: u, .. } => {
            assert_eq!(u, &format!("{url}?key=mooncake%2Fram%2Fx"));
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("metadata server {url}?key=")),
        "{err}"
    );
}

#[tokio::test]
async fn silent_server_times_out_within_the_bound() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let config = HttpStoreConfig {
        connect_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_millis(300),
        auth_token: None,
    };
    let store = HttpStore::new(&format!("http://{addr}/metadata"), config).unwrap();
    let start = Instant::now();
    let err = store.put("k", Bytes::from_static(b"{}")).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(
        err,
        MetadataError::Timeout {
            url: format!("http://{addr}/metadata?key=k"),
            timeout: Duration::from_millis(300)
        }
    );
}

#[tokio::test]
async fn server_error_500_is_reported_with_status_and_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nboom")
                .await;
        }
    });
    let store = HttpStore::new(
        &format!("http://{addr}/metadata"),
        HttpStoreConfig::default(),
    )
    .unwrap();
    for (err, method) in [
        (store.get("k").await.unwrap_err(), "GET"),
        (
            store.put("k", Bytes::from_static(b"{}")).await.unwrap_err(),
            "PUT",
        ),
        (store.delete("k").await.unwrap_err(), "DELETE"),
    ] {
        assert_eq!(
            err,
            MetadataError::Status {
                url: format!("http://{addr}/metadata?key=k"),
                method,
                status: 500,
                body: "boom".into()
            }
        );
    }
}

#[tokio::test]
async fn http_store_rejects_non_http_urls() {
    let err = HttpStore::new("etcd://h:2379", HttpStoreConfig::default()).unwrap_err();
    assert_eq!(
        err,
        MetadataError::InvalidUri {
            input: "etcd://h:2379".into(),
            reason: "an http metadata server URL must start with http://".into()
        }
    );
}

/// A server with a token refuses writes without it (401, "authentication failed") and
/// keeps the table unchanged; reads stay open; a client with the token writes.
#[tokio::test]
async fn writes_need_the_token_when_the_server_has_one() {
    use mooncake_metadata::AuthToken;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap();
    let server = HttpMetadataServer::new(HttpMetadataServerConfig {
        auth_token: AuthToken::new("s3cr3t").unwrap(),
        ..HttpMetadataServerConfig::default()
    });
    tokio::spawn(server.run(listener, std::future::pending()));
    let k = "/metadata?key=k";
    for method in ["PUT", "DELETE"] {
        let (status, body) = raw(a, method, k, b"{}").await;
        assert_eq!(status, 401, "{method}");
        assert!(body.contains("authentication failed"), "{body}");
    }
    let base = format!("http://{a}/metadata");
    let store = |token: &str| {
        HttpStore::new(
            &base,
            HttpStoreConfig {
                auth_token: AuthToken::new(token).unwrap(),
                ..HttpStoreConfig::default()
            },
        )
        .unwrap()
    };
    let err = store("wrong")
        .put("k", Bytes::from_static(b"{\"x\":1}"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(raw(a, "GET", k, b"").await.0, 404, "nothing was written");
    store("s3cr3t")
        .put("k", Bytes::from_static(b"{\"x\":1}"))
        .await
        .unwrap();
    assert_eq!(
        store("").get("k").await.unwrap().unwrap(),
        &b"{\"x\":1}"[..]
    );
    assert!(store("").delete("k").await.is_err());
    store("s3cr3t").delete("k").await.unwrap();
}
