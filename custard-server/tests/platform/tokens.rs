//! Personal access tokens: created with a session, used as a bearer token on
//! the API with their user's role in their organisation, never in the web
//! UI, and refused at once once revoked, expired, or their user removed.

use super::*;

/// A token of the caller's, made through the API: (id, secret).
async fn token_of(p: &Platform, session: &str, name: &str) -> (String, String) {
    let body = json!({"name": name, "expires_in_days": 30});
    let created = p.ok(StatusCode::CREATED, "POST", "/api/v1/tokens", session, Some(body)).await;
    let secret = created["token"].as_str().expect("the secret").to_owned();
    assert!(secret.starts_with("custard_pat_"), "{created}");
    assert!(created["expires_at"].is_string(), "{created}");
    (created["id"].as_str().expect("id").to_owned(), secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_acts_as_its_user_on_the_api_until_revoked() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, _) = p.connection(&a, "Shop").await;
        let (id, secret) = token_of(&p, &a, "script").await;

        // It reads what its user reads.
        let listed = p.ok(StatusCode::OK, "GET", "/api/v1/connections", &secret, None).await;
        assert_eq!(listed["connections"][0]["id"], json!(conn), "{listed}");
        // Listed without its secret, with when it was used.
        let tokens = p.ok(StatusCode::OK, "GET", "/api/v1/tokens", &a, None).await;
        assert_eq!(tokens["tokens"].as_array().map(Vec::len), Some(1), "{tokens}");
        assert_eq!(tokens["tokens"][0]["id"], json!(id));
        assert!(tokens["tokens"][0]["last_used_at"].is_string(), "{tokens}");
        assert!(!tokens.to_string().contains(&secret), "the secret is listed: {tokens}");

        // What needs a session is refused to a token.
        for (method, path, body) in [
            ("POST", "/api/v1/tokens", Some(json!({"name": "another"}))),
            (
                "POST",
                "/api/v1/auth/change-password",
                Some(json!({"current_password": PASSWORD, "new_password": "a whole new passphrase 9"})),
            ),
            ("POST", "/api/v1/auth/logout", None),
            ("POST", "/api/v1/auth/logout-others", None),
        ] {
            let (status, reply) = p.call(method, path, Some(&secret), body).await;
            assert_eq!((status, code(&reply)), (StatusCode::FORBIDDEN, "forbidden"), "{path}");
        }
        // The password still works: nothing was changed by the token.
        p.login("a@example.com").await;
        // Nor, though its user is the owner, may it delete the organisation
        // or make an owner: those take a session.
        let (status, _) = p.call("DELETE", "/api/v1/org", Some(&secret), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a token deleted the organisation");
        let owner = json!({"email": "o@example.com", "role": "owner"});
        let (status, _) =
            p.call("POST", "/api/v1/org/invitations", Some(&secret), Some(owner)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a token invited an owner");
        let member = json!({"email": "m@example.com", "role": "member"});
        p.ok(StatusCode::CREATED, "POST", "/api/v1/org/invitations", &secret, Some(member)).await;

        // Revoked (by itself): refused from the next request on.
        p.ok(StatusCode::NO_CONTENT, "DELETE", &format!("/api/v1/tokens/{id}"), &secret, None)
            .await;
        let (status, reply) = p.call("GET", "/api/v1/connections", Some(&secret), None).await;
        assert_eq!((status, code(&reply)), (StatusCode::UNAUTHORIZED, "unauthorized"));
        let (status, _) =
            p.call("DELETE", &format!("/api/v1/tokens/{id}"), Some(&a), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "revoked twice");

        // A malformed or unknown token reads like any bad token.
        for bad in ["custard_pat_nope", "custard_pat_0000000000000000000000000000000000000000000"] {
            let (status, _) = p.call("GET", "/api/v1/connections", Some(bad), None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_to_their_organisation_and_their_users_role() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (a_conn, _) = p.connection(&a, "Shop A").await;
        let (_, b_secret) = token_of(&p, &b, "b's script").await;
        let (a_token, _) = token_of(&p, &a, "a's script").await;

        // B's token sees none of A's, and cannot touch A's tokens.
        let listed = p.ok(StatusCode::OK, "GET", "/api/v1/connections", &b_secret, None).await;
        assert_eq!(listed["connections"], json!([]), "{listed}");
        let (status, _) =
            p.call("GET", &format!("/api/v1/connections/{a_conn}"), Some(&b_secret), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let path = format!("/api/v1/tokens/{a_token}");
        // A token revokes only itself: any other id is refused, found or not.
        let (status, _) = p.call("DELETE", &path, Some(&b_secret), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "B's token revoked A's token");
        let (status, _) = p.call("DELETE", &path, Some(&b), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "B revoked A's token");

        // A member's token cannot do what only admins may.
        let (member_id, member) = p.member_of(&a, "m@example.com").await;
        let (_, member_secret) = token_of(&p, &member, "member's script").await;
        let invite = json!({"email": "x@example.com", "role": "member"});
        let (status, reply) =
            p.call("POST", "/api/v1/org/invitations", Some(&member_secret), Some(invite)).await;
        assert_eq!((status, code(&reply)), (StatusCode::FORBIDDEN, "forbidden"), "{reply}");
        let (status, _) = p
            .call("DELETE", &format!("/api/v1/connections/{a_conn}"), Some(&member_secret), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        p.ok(StatusCode::OK, "GET", "/api/v1/connections", &member_secret, None).await;

        // Removed from the organisation: the token is refused at once.
        p.ok(
            StatusCode::NO_CONTENT,
            "DELETE",
            &format!("/api/v1/org/members/{member_id}"),
            &a,
            None,
        )
        .await;
        let (status, _) = p.call("GET", "/api/v1/connections", Some(&member_secret), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused_and_the_web_ui_takes_none() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (id, secret) = token_of(&p, &a, "short-lived").await;
        p.ok(StatusCode::OK, "GET", "/api/v1/connections", &secret, None).await;

        // The web UI: neither as the session cookie nor as a bearer header.
        for request in [
            Request::builder()
                .uri("/connections")
                .header(header::COOKIE, format!("custard_session={secret}"))
                .body(Body::empty()),
            Request::builder()
                .uri("/connections")
                .header(header::AUTHORIZATION, format!("Bearer {secret}"))
                .body(Body::empty()),
        ] {
            let response = p.send(request.expect("request")).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "the web UI took a token");
            let location = response.headers().get(header::LOCATION).cloned();
            assert!(
                location
                    .as_ref()
                    .and_then(|l| l.to_str().ok())
                    .is_some_and(|l| l.starts_with("/login")),
                "{location:?}"
            );
        }

        // Expired (its expiry moved into the past in the store): refused.
        let db = rusqlite::Connection::open(p.dir.path().join("custard.db")).expect("the store");
        let changed = db
            .execute("UPDATE personal_tokens SET expires_at = 1000 WHERE id = ?1", [&id])
            .expect("update");
        assert_eq!(changed, 1);
        let (status, _) = p.call("GET", "/api/v1/connections", Some(&secret), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // Bad requests are named.
        for body in [
            json!({"name": ""}),
            json!({"name": "x", "expires_in_days": 0}),
            json!({"name": "x", "expires_in_days": 367}),
            json!({"name": "x".repeat(101)}),
        ] {
            let (status, reply) = p.call("POST", "/api/v1/tokens", Some(&a), Some(body)).await;
            assert_eq!(
                (status, code(&reply)),
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_error")
            );
        }
        // Without a lifetime: until revoked.
        let forever = json!({"name": "forever"});
        let created = p.ok(StatusCode::CREATED, "POST", "/api/v1/tokens", &a, Some(forever)).await;
        assert_eq!(created["expires_at"], Value::Null, "{created}");
    })
    .await;
}
