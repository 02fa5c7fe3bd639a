//! `bare-forward ADDR BACKEND...`: forwards every request to a backend and
//! answers what it answered. Each client connection gets a connection of
//! its own to one backend (round robin over the connections).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type Sender = client::SendRequest<Empty<Bytes>>;

async fn connect(backend: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(backend)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = client::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn forward(
    sender: &Mutex<Sender>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, String> {
    let uri = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let outgoing = Request::builder()
        .method(req.method())
        .uri(uri)
        .header("host", "backend")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let answer = sender
        .lock()
        .await
        .send_request(outgoing)
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let addr = pygmy_baselines::addr_arg(1)?;
    let backends = (2..std::env::args().len())
        .map(pygmy_baselines::addr_arg)
        .collect::<Result<Vec<_>, _>>()?;
    if backends.is_empty() {
        return Err("usage: bare-forward ADDR BACKEND...".to_owned());
    }
    let listener = TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
    let next = AtomicUsize::new(0);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
        tokio::spawn(async move {
            let Ok(sender) = connect(backend).await else {
                return;
            };
            let sender = Arc::new(Mutex::new(sender));
            let service = service_fn(move |req| {
                let sender = Arc::clone(&sender);
                async move {
                    let answer = forward(&sender, req).await;
                    Ok::<_, std::convert::Infallible>(answer.unwrap_or_else(|err| {
                        let mut failed = Response::new(Full::new(Bytes::from(err)));
                        *failed.status_mut() = StatusCode::BAD_GATEWAY;
                        failed
                    }))
                }
            });
            let _ = server::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
