//! Extractors shared by handlers: the client's address, and JSON bodies and
//! query strings whose rejections use the API's error shape.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use crate::error::{AppError, ErrorCode};

/// The address the request came from (loopback when served in process):
/// the connection's, or behind a trusted proxy the one its
/// `X-Forwarded-For` names ([`TrustedProxies`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip());
        Ok(ClientIp(TrustedProxies::from_ref(state).client(peer, &parts.headers)))
    }
}

/// The proxies (load balancers) whose `X-Forwarded-For` says who the client
/// is (`CUSTARD_TRUSTED_PROXIES`); without any, the client is whoever
/// connected, and a header anyone can send is ignored.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// Proxies from addresses and CIDR ranges (`10.0.0.0/8`, `127.0.0.1`).
    pub fn parse<I, S>(entries: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("{entry:?} is neither an IP address nor a CIDR range (10.0.0.0/8)")
                })?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets.into()))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request from `peer`: `peer` itself unless it is a
    /// trusted proxy; then the nearest address in `X-Forwarded-For` that is
    /// not one (read from the right: addresses to its left are whatever the
    /// client claimed, so only what trusted proxies appended counts).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // Garbage a proxy passed on: the last address known good.
                return client;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// Query-string parameters; a missing or malformed parameter answers with the
/// API's `{"error": ...}` body (`validation_error`).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| AppError::new(ErrorCode::Validation, rejection.body_text()))?;
        Ok(ApiQuery(value))
    }
}

/// A JSON body; malformed JSON, missing fields and oversized bodies answer
/// with the API's `{"error": ...}` body and a 4xx status.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().expect("header"));
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::default();
        let headers = forwarded(&["6.6.6.6"]);
        assert_eq!(none.client(ip("10.0.0.5"), &headers), ip("10.0.0.5"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_nearest_untrusted_hop_is_the_client() {
        let proxies = TrustedProxies::parse(["10.0.0.0/8", "127.0.0.1"]).expect("valid");
        // What the client claimed (left) is not believed; what the trusted
        // proxies appended (right) is.
        let headers = forwarded(&["1.1.1.1, 203.0.113.7", "10.1.2.3"]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &headers), ip("203.0.113.7"));
        // A peer that is not a proxy is the client, whatever it sends.
        assert_eq!(proxies.client(ip("198.51.100.1"), &headers), ip("198.51.100.1"));
        // No header: the proxy itself.
        assert_eq!(proxies.client(ip("10.9.9.9"), &HeaderMap::new()), ip("10.9.9.9"));
        // Garbage stops the walk at the last good address.
        let garbage = forwarded(&["203.0.113.7, not-an-ip, 10.0.0.2"]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &garbage), ip("10.0.0.2"));
        // An IPv4 address mapped into IPv6 is the IPv4 address.
        let mapped = forwarded(&["::ffff:203.0.113.9"]);
        assert_eq!(proxies.client(ip("::ffff:127.0.0.1"), &mapped), ip("203.0.113.9"));
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        let error = TrustedProxies::parse(["10.0.0.0/8", "nginx"]).expect_err("refused");
        assert!(error.contains("\"nginx\""), "{error}");
        assert!(TrustedProxies::parse([" ", ""]).expect("empty is fine").0.is_empty());
    }
}
