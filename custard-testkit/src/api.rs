//! The platform's HTTP API as one user (or nobody) calls it, over a real
//! socket: for tests that run the server as a process.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A client of one server, with a bearer token or none.
#[derive(Clone, Debug)]
pub struct Api {
    /// The HTTP client (its timeouts are the test's).
    pub http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    /// The access token sent as `Authorization: Bearer`, if any.
    pub token: Option<String>,
}

impl Api {
    /// A request to `path` with the token, to send as it is (a streamed body).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// One call: the status and the body as JSON (a JSON string when the body
    /// is not JSON); an error when nothing answered.
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// [`try_call`](Self::try_call) that panics when nothing answered.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let what = format!("{method} {path}");
        self.try_call(method, path, body).await.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Asks `question` about `connection` (`POST /api/v1/query`).
    pub async fn try_ask(
        &self,
        connection: &str,
        question: &str,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let body = json!({"connection_id": connection, "question": question});
        self.try_call(Method::POST, "/api/v1/query", Some(&body)).await
    }

    /// [`try_ask`](Self::try_ask) that panics when nothing answered.
    pub async fn ask(&self, connection: &str, question: &str) -> (StatusCode, Value) {
        self.try_ask(connection, question)
            .await
            .unwrap_or_else(|e| panic!("asking {question}: {e}"))
    }
}
