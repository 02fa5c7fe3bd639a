//! `bare-backend ADDR`: answers every request with one book as JSON, as a
//! catalog replica answers `GET /item/1`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BOOK: &str = r#"{"items":[{"cost":"1.99","count":100,"id":1,"title":"How to get a good grade in 677 in 20 minutes a day.","topic":"distributed systems"}],"status":"Success","validation_code":200}"#;

async fn answer(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BOOK.as_bytes())))
        .unwrap_or_default())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let addr = pygmy_baselines::addr_arg(1)?;
    let listener = TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
