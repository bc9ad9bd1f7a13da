//! Personal access tokens attacked as a hostile tenant or a thief of a token
//! would: each test states what must hold. Those marked "Finding" began as
//! the demonstration of a bug a review found, and stay as its regression
//! test.

use super::*;

/// A token of the session's user in the session's organisation: (id, secret).
async fn token_of(p: &Platform, session: &str, name: &str) -> (String, String) {
    let body = json!({"name": name});
    let created = p.ok(StatusCode::CREATED, "POST", "/api/v1/tokens", session, Some(body)).await;
    let secret = created["token"].as_str().expect("the secret").to_owned();
    (created["id"].as_str().expect("id").to_owned(), secret)
}

/// The store's SQLite file, opened beside the server (as the store tests do).
fn db(p: &Platform) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(p.dir.path().join("custard.db")).expect("the store");
    db.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    db
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The token's `last_used_at` in the store (ms), if set.
fn last_used(p: &Platform, id: &str) -> Option<i64> {
    db(p)
        .query_row("SELECT last_used_at FROM personal_tokens WHERE id = ?1", [id], |r| r.get(0))
        .expect("the token's row")
}

/// How many token rows the store holds in all.
fn token_rows(p: &Platform) -> i64 {
    db(p).query_row("SELECT count(*) FROM personal_tokens", [], |r| r.get(0)).expect("count")
}

/// `owner` invites `email` (an existing account) as `role`: the invitation's token.
async fn invite_existing(p: &Platform, owner: &str, email: &str, role: &str) -> String {
    let before = p.sink.messages().len();
    let invite = json!({"email": email, "role": role});
    p.ok(StatusCode::CREATED, "POST", "/api/v1/org/invitations", owner, Some(invite)).await;
    p.mailed_token(before, email, "/accept-invitation?token=").await
}

/// A token stored straight in the store for `user` in `org` (the API only
/// makes one in the session's organisation): (id, secret).
fn stored_token(p: &Platform, user: &str, org: &str) -> (String, String) {
    let secret = custard_server::auth::new_personal_token();
    let id = format!("pat-{}", &secret[12..24]);
    db(p)
        .execute(
            "INSERT INTO personal_tokens (id, user_id, org_id, name, token_hash, created_at)
             VALUES (?1, ?2, ?3, 'made here', ?4, ?5)",
            rusqlite::params![id, user, org, custard_server::auth::hash_secret(&secret), now_ms()],
        )
        .expect("insert a token");
    (id, secret)
}

// ---------------------------------------------------------------------------
// Findings (fail until fixed)

/// Finding: a password reset is the account's recovery ("every session of
/// your account was signed out"): a token made by whoever held the account
/// stops working with it (it once kept working).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_ends_the_accounts_personal_tokens() {
    bounded(async {
        let p = platform(&[]).await;
        let thief = p.user("a@example.com", "Org A").await;
        let (_, secret) = token_of(&p, &thief, "persistence").await;

        let before = p.sink.messages().len();
        let forgot = json!({"email": "a@example.com"});
        let (status, _) = p.call("POST", "/api/v1/auth/forgot-password", None, Some(forgot)).await;
        assert!(status.is_success(), "{status}");
        let reset = p.mailed_token(before, "a@example.com", "/reset-password?token=").await;
        let body = json!({"token": reset, "new_password": "a brand new passphrase 42"});
        p.ok(StatusCode::OK, "POST", "/api/v1/auth/reset-password", "", Some(body)).await;
        let (status, _) = p.call("GET", "/api/v1/connections", Some(&thief), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the thief's session is out");

        let (status, _) = p.call("GET", "/api/v1/connections", Some(&secret), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the thief's token outlived the reset");
    })
    .await;
}

/// Finding: changing the password "signs out every other browser and app
/// signed in to your account" (settings page), the tokens included (they
/// once stayed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_accounts_personal_tokens() {
    bounded(async {
        let p = platform(&[]).await;
        let owner = p.user("a@example.com", "Org A").await;
        let (_, secret) = token_of(&p, &owner, "made by a thief").await;
        let change =
            json!({"current_password": PASSWORD, "new_password": "a whole new passphrase 9"});
        let path = "/api/v1/auth/change-password";
        p.ok(StatusCode::NO_CONTENT, "POST", path, &owner, Some(change)).await;

        let (status, _) = p.call("GET", "/api/v1/connections", Some(&secret), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the token outlived the password change");
    })
    .await;
}

/// Finding: a token acts in ONE organisation: accepting an invitation with
/// it, which once made its user a member of another one, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cannot_join_its_user_to_another_organisation() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (_, secret) = token_of(&p, &a, "org A only").await;
        let invitation = invite_existing(&p, &b, "a@example.com", "admin").await;

        let body = json!({"token": invitation});
        let (status, reply) =
            p.call("POST", "/api/v1/auth/accept-invitation", Some(&secret), Some(body)).await;
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "org A's token joined org B: {reply}"
        );
    })
    .await;
}

/// Finding: the reply that carries the token's secret is marked
/// `Cache-Control: no-store`, as the pages are (it once was not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reply_with_a_new_tokens_secret_is_not_cacheable() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let body = json!({"name": "cached?"});
        let response =
            p.send(Platform::request("POST", "/api/v1/tokens", Some(&a), Some(&body))).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let cache = response.headers().get(header::CACHE_CONTROL).cloned();
        assert!(
            cache.as_ref().and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("no-store")),
            "Cache-Control: {cache:?}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Checked and holding

/// Only a session may sign out, change the password, make tokens; a token
/// is no web session either (cookie or header, pages or forms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_no_session_anywhere() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (_, secret) = token_of(&p, &a, "script").await;
        let rows = token_rows(&p);

        // As the API's session cookie (CSRF-free GET, and a POST).
        for (method, path) in [("GET", "/api/v1/connections"), ("GET", "/api/v1/auth/profile")] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header(header::COOKIE, format!("custard_session={secret}"))
                .body(Body::empty())
                .expect("request");
            assert_eq!(p.send(request).await.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        // The scheme's case does not matter (RFC 9110); another scheme, or
        // none, is no way in.
        let request = Request::builder()
            .uri("/api/v1/connections")
            .header(header::AUTHORIZATION, format!("bearer {secret}"))
            .body(Body::empty())
            .expect("request");
        assert_eq!(p.send(request).await.status(), StatusCode::OK);
        for value in [format!("Token {secret}"), format!("Bearer{secret}"), secret.clone()] {
            let request = Request::builder()
                .uri("/api/v1/connections")
                .header(header::AUTHORIZATION, value.clone())
                .body(Body::empty())
                .expect("request");
            assert_eq!(p.send(request).await.status(), StatusCode::UNAUTHORIZED, "{value}");
        }
        // Web pages and forms, with the token as cookie or header.
        for (method, path) in [
            ("GET", "/settings"),
            ("GET", "/welcome"),
            ("POST", "/settings/tokens"),
            ("POST", "/settings/sessions"),
            ("POST", "/settings/organisation/delete"),
        ] {
            for cookie in [true, false] {
                let mut request = Request::builder().method(method).uri(path);
                request = if cookie {
                    request.header(header::COOKIE, format!("custard_session={secret}"))
                } else {
                    request.header(header::AUTHORIZATION, format!("Bearer {secret}"))
                };
                let request = request
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from("name=web&expires_in_days=30&confirm=Org+A"))
                    .expect("request");
                let response = p.send(request).await;
                let status = response.status();
                assert!(
                    matches!(
                        status,
                        StatusCode::SEE_OTHER
                            | StatusCode::NOT_FOUND
                            | StatusCode::METHOD_NOT_ALLOWED
                            | StatusCode::FORBIDDEN
                    ),
                    "{method} {path} (cookie: {cookie}): {status}"
                );
                if status == StatusCode::SEE_OTHER {
                    let to = response.headers()[header::LOCATION].to_str().unwrap_or_default();
                    assert!(to.starts_with("/login"), "{method} {path}: {to}");
                }
            }
        }
        assert_eq!(token_rows(&p), rows, "a token made a token");
        // Sign-out, sign-out of the others, a new token: refused with 403.
        for (path, body) in [
            ("/api/v1/auth/logout", None),
            ("/api/v1/auth/logout-others", None),
            ("/api/v1/tokens", Some(json!({"name": "child"}))),
        ] {
            let (status, _) = p.call("POST", path, Some(&secret), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        }
        // The session the token's user signed in with is untouched.
        p.ok(StatusCode::OK, "GET", "/api/v1/auth/profile", &a, None).await;
        // A wrong current password through a token is not even counted.
        let change = json!({"current_password": "wrong", "new_password": "whatever it is 77 x"});
        let (status, _) =
            p.call("POST", "/api/v1/auth/change-password", Some(&secret), Some(change)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    })
    .await;
}

/// A user in two organisations: the token of one sees and touches nothing
/// of the other, its tokens included, whatever ids it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_one_organisation_never_acts_in_the_users_other() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (a_conn, _) = p.connection(&a, "Shop A").await;
        let (b_conn, _) = p.connection(&b, "Shop B").await;
        let (a_token, a_secret) = token_of(&p, &a, "in A").await;
        // A joins B too, as an admin, and gets a token there.
        let invitation = invite_existing(&p, &b, "a@example.com", "admin").await;
        let body = json!({"token": invitation});
        p.ok(StatusCode::OK, "POST", "/api/v1/auth/accept-invitation", &a, Some(body)).await;
        let profile = p.ok(StatusCode::OK, "GET", "/api/v1/auth/profile", &a, None).await;
        let user = profile["user"]["id"].as_str().expect("user id").to_owned();
        let a_org = profile["organization_id"].as_str().expect("org").to_owned();
        let b_org =
            p.ok(StatusCode::OK, "GET", "/api/v1/auth/profile", &b, None).await["organization_id"]
                .as_str()
                .expect("org")
                .to_owned();
        let (b_token, b_secret) = stored_token(&p, &user, &b_org);

        for (secret, mine, theirs, org, other_token) in [
            (&a_secret, &a_conn, &b_conn, &a_org, &b_token),
            (&b_secret, &b_conn, &a_conn, &b_org, &a_token),
        ] {
            let me = p.ok(StatusCode::OK, "GET", "/api/v1/auth/profile", secret, None).await;
            assert_eq!(me["organization_id"], json!(org));
            let listed = p.ok(StatusCode::OK, "GET", "/api/v1/connections", secret, None).await;
            let ids: Vec<&Value> =
                listed["connections"].as_array().expect("list").iter().map(|c| &c["id"]).collect();
            assert_eq!(ids, [&json!(mine)], "{listed}");
            for (method, path) in [
                ("GET", format!("/api/v1/connections/{theirs}")),
                ("GET", format!("/api/v1/connections/{theirs}/schema")),
                ("POST", format!("/api/v1/connections/{theirs}/rotate-key")),
                ("DELETE", format!("/api/v1/connections/{theirs}")),
            ] {
                let (status, _) = p.call(method, &path, Some(secret), None).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            }
            // A token revokes only itself (403 whether the other exists or not).
            let path = format!("/api/v1/tokens/{other_token}");
            let (status, _) = p.call("DELETE", &path, Some(secret), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            let tokens = p.ok(StatusCode::OK, "GET", "/api/v1/tokens", secret, None).await;
            assert_eq!(tokens["tokens"].as_array().map(Vec::len), Some(1), "{tokens}");
        }
        // Both tokens and both connections are still there.
        p.get_connection(&a, &a_conn).await;
        p.get_connection(&b, &b_conn).await;
        assert_eq!(token_rows(&p), 2);
    })
    .await;
}

/// The token has its user's role of the moment: demoted, promoted, removed
/// (and back in: the old token stays dead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_follows_its_users_role_at_once() {
    bounded(async {
        let p = platform(&[]).await;
        let owner = p.user("a@example.com", "Org A").await;
        let (member_id, member) = p.member_of(&owner, "m@example.com").await;
        let (_, secret) = token_of(&p, &member, "m's").await;
        let member_path = format!("/api/v1/org/members/{member_id}");
        let invitations = "/api/v1/org/invitations";

        let (status, _) = p.call("GET", invitations, Some(&secret), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a member");
        let admin = json!({"role": "admin"});
        p.ok(StatusCode::OK, "PATCH", &member_path, &owner, Some(admin)).await;
        p.ok(StatusCode::OK, "GET", invitations, &secret, None).await;
        let me = p.ok(StatusCode::OK, "GET", "/api/v1/auth/profile", &secret, None).await;
        assert_eq!(me["role"], "admin");
        let demoted = json!({"role": "member"});
        p.ok(StatusCode::OK, "PATCH", &member_path, &owner, Some(demoted)).await;
        let (status, _) = p.call("GET", invitations, Some(&secret), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "demoted, at once");
        // An admin's token cannot make itself owner, nor remove the owner.
        p.ok(StatusCode::OK, "PATCH", &member_path, &owner, Some(json!({"role": "admin"}))).await;
        let (status, _) =
            p.call("PATCH", &member_path, Some(&secret), Some(json!({"role": "owner"}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "an admin's token made itself owner");
        let (status, _) = p.call("DELETE", "/api/v1/org", Some(&secret), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "an admin's token deleted the organisation");

        // Removed: refused; invited back: the old token stays refused.
        p.ok(StatusCode::NO_CONTENT, "DELETE", &member_path, &owner, None).await;
        let (status, _) = p.call("GET", "/api/v1/connections", Some(&secret), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let invitation = invite_existing(&p, &owner, "m@example.com", "member").await;
        // In no organisation, the member accepts on the web with their old session.
        let visitor = p.visitor().await;
        let cookie = format!("custard_session={member}; {}", visitor.cookie);
        let form = [("token", invitation.as_str()), ("csrf_token", visitor.csrf.as_str())];
        let (status, _, body) =
            p.web("POST", "/accept-invitation", &cookie, Some(&form), None).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "rejoined: {body}");
        let back = p.login("m@example.com").await;
        let me = p.ok(StatusCode::OK, "GET", "/api/v1/auth/profile", &back, None).await;
        assert_eq!(me["role"], "member", "back in");
        let (status, _) = p.call("GET", "/api/v1/connections", Some(&secret), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the old token came back");
    })
    .await;
}

/// The live status stream opened with a token ends once the token is
/// revoked, expires, or its user is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_stream_of_a_token_ends_with_the_token() {
    bounded(async {
        let p = platform(&["--session-recheck-ms", "50"]).await;
        let owner = p.user("a@example.com", "Org A").await;
        let (member_id, member) = p.member_of(&owner, "m@example.com").await;
        let (revoked_id, revoked) = token_of(&p, &owner, "revoked").await;
        let (expiring_id, expiring) = token_of(&p, &owner, "expiring").await;
        let (_, removed) = token_of(&p, &member, "removed").await;
        let (_, stays) = token_of(&p, &owner, "stays").await;
        // It expires 1.5 s from now.
        db(&p)
            .execute(
                "UPDATE personal_tokens SET expires_at = ?2 WHERE id = ?1",
                rusqlite::params![expiring_id, now_ms() + 1500],
            )
            .expect("update");
        let path = "/api/v1/connections/events";
        let mut revoked_stream = p.events("GET", path, &revoked, None).await;
        let mut expiring_stream = p.events("GET", path, &expiring, None).await;
        let mut removed_stream = p.events("GET", path, &removed, None).await;
        let mut stays_stream = p.events("GET", path, &stays, None).await;

        p.ok(
            StatusCode::NO_CONTENT,
            "DELETE",
            &format!("/api/v1/tokens/{revoked_id}"),
            &owner,
            None,
        )
        .await;
        p.ok(
            StatusCode::NO_CONTENT,
            "DELETE",
            &format!("/api/v1/org/members/{member_id}"),
            &owner,
            None,
        )
        .await;
        for (who, stream) in [
            ("revoked", &mut revoked_stream),
            ("removed", &mut removed_stream),
            ("expired", &mut expiring_stream),
        ] {
            let sent = stream.until_end().await;
            assert!(sent.is_empty(), "the {who} token's stream sent {sent:?}");
        }
        let (status, _) = p.call("GET", "/api/v1/connections", Some(&expiring), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "expired");
        // A valid token's stream went through the same checks and delivers.
        let (conn, key) = p.connection(&owner, "Shop").await;
        let agent = p.fake_agent(&conn, &key, Script::answering(1)).await;
        let seen =
            stays_stream.until("agent_connected", |e| e.data["event"] == "agent_connected").await;
        assert_eq!(seen.last().expect("an event").data["id"], json!(conn));
        agent.hang_up();
    })
    .await;
}

/// Expiry to the millisecond: refused from `expires_at` on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_from_its_expiry_on() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (id, secret) = token_of(&p, &a, "boundary").await;
        let set = |at: i64| {
            db(&p)
                .execute(
                    "UPDATE personal_tokens SET expires_at = ?2 WHERE id = ?1",
                    rusqlite::params![id, at],
                )
                .expect("update")
        };
        set(now_ms() + 5_000);
        p.ok(StatusCode::OK, "GET", "/api/v1/connections", &secret, None).await;
        set(now_ms());
        let (status, _) = p.call("GET", "/api/v1/connections", Some(&secret), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "at its expiry");
        // An expiry far away (the API's 366 days' worth, and more) still works.
        set(now_ms() + 400 * 86_400_000);
        p.ok(StatusCode::OK, "GET", "/api/v1/connections", &secret, None).await;
        // The error names no reason (revoked, expired, removed read the same).
        set(1);
        let (_, expired) = p.call("GET", "/api/v1/connections", Some(&secret), None).await;
        let unknown = format!("custard_pat_{}", "A".repeat(43));
        let (_, missing) = p.call("GET", "/api/v1/connections", Some(&unknown), None).await;
        assert_eq!(expired, missing);
        assert!(!expired.to_string().contains(&secret[12..]), "{expired}");
    })
    .await;
}

/// `last_used_at` is written at most once a minute, not on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_use_is_written_once_a_minute_not_per_request() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (id, secret) = token_of(&p, &a, "busy").await;
        assert_eq!(last_used(&p, &id), None);
        p.ok(StatusCode::OK, "GET", "/api/v1/connections", &secret, None).await;
        let first = last_used(&p, &id).expect("recorded");
        for _ in 0..30 {
            p.ok(StatusCode::OK, "GET", "/api/v1/connections", &secret, None).await;
        }
        assert_eq!(last_used(&p, &id), Some(first), "written again within the minute");

        let set = |at: i64| {
            db(&p)
                .execute(
                    "UPDATE personal_tokens SET last_used_at = ?2 WHERE id = ?1",
                    rusqlite::params![id, at],
                )
                .expect("update")
        };
        let almost = now_ms() - 55_000;
        set(almost);
        p.ok(StatusCode::OK, "GET", "/api/v1/connections", &secret, None).await;
        assert_eq!(last_used(&p, &id), Some(almost), "55 s ago: not written");
        set(now_ms() - 61_000);
        let before = now_ms();
        p.ok(StatusCode::OK, "GET", "/api/v1/connections", &secret, None).await;
        assert!(last_used(&p, &id).is_some_and(|at| at >= before), "61 s ago: written");
        // A recorded use in the future (another replica's fast clock) is kept, not fought over.
        let future = now_ms() + 3_600_000;
        set(future);
        p.ok(StatusCode::OK, "GET", "/api/v1/connections", &secret, None).await;
        assert_eq!(last_used(&p, &id), Some(future));
    })
    .await;
}

/// 60 creations at once through the API: exactly 50 tokens, 10 conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limit_of_fifty_holds_under_concurrent_api_calls() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let mut tasks = Vec::new();
        for i in 0..60 {
            let app = p.app.clone();
            let body = json!({"name": format!("t{i}")});
            let request = Platform::request("POST", "/api/v1/tokens", Some(&a), Some(&body));
            tasks.push(tokio::spawn(async move {
                app.oneshot(request).await.expect("infallible").status()
            }));
        }
        let (mut created, mut conflicts) = (0, 0);
        for task in tasks {
            match task.await.expect("task") {
                StatusCode::CREATED => created += 1,
                StatusCode::CONFLICT => conflicts += 1,
                other => panic!("neither created nor refused: {other}"),
            }
        }
        assert_eq!((created, conflicts), (50, 10));
        let listed = p.ok(StatusCode::OK, "GET", "/api/v1/tokens", &a, None).await;
        assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(50));
        assert_eq!(token_rows(&p), 50);
    })
    .await;
}

/// Names: control characters refused, length counted in characters; the
/// lifetime: 1 to 366 days, and absurd numbers refused without a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_lifetimes_are_checked() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let post = |body: Value| {
            let p = &p;
            let a = &a;
            async move { p.call("POST", "/api/v1/tokens", Some(a), Some(body)).await }
        };
        for name in [
            "a\u{7}b",
            "line\nbreak",
            "\t",
            "nul\0",
            "del\u{7f}",
            "   ",
            "x\u{85}y",
            "\u{1b}[31mred",
        ] {
            let (status, reply) = post(json!({"name": name})).await;
            assert_eq!(
                (status, code(&reply)),
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
                "{name:?}"
            );
        }
        // 100 characters of 2 bytes each are fine; 101 are not.
        let (status, reply) = post(json!({"name": "é".repeat(100)})).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        assert_eq!(reply["name"], json!("é".repeat(100)));
        let (status, _) = post(json!({"name": "é".repeat(101)})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        // Trimmed.
        let (_, reply) = post(json!({"name": "  spaced  "})).await;
        assert_eq!(reply["name"], "spaced");

        for days in [json!(0), json!(367), json!(u32::MAX), json!(i64::MAX)] {
            let (status, _) = post(json!({"name": "x", "expires_in_days": days})).await;
            assert!(
                status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
                "{days}: {status}"
            );
        }
        for days in [json!(-1), json!(1.5), json!("30"), json!(1e30), json!(true)] {
            let (status, _) = post(json!({"name": "x", "expires_in_days": days})).await;
            assert!(status.is_client_error(), "{days}: {status}");
        }
        let (status, reply) = post(json!({"name": "x", "expires_in_days": 366})).await;
        assert_eq!(status, StatusCode::CREATED);
        let expires =
            chrono::DateTime::parse_from_rfc3339(reply["expires_at"].as_str().expect("at"))
                .expect("a time");
        let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
        assert!((366 * 24 - 1..=366 * 24).contains(&days), "{days} h");
        // Unknown fields are refused, not ignored (no smuggled org or user).
        let (status, _) = post(json!({"name": "x", "org_id": "elsewhere"})).await;
        assert!(status.is_client_error(), "{status}");
        // Three tokens were made in all (the 100 "é", "spaced", 366 days).
        assert_eq!(token_rows(&p), 3);
    })
    .await;
}

/// The settings page: the secret is shown once, to the session that made
/// it, never in a URL; a reload or another session of the same user does
/// not see it; absurd lifetimes are refused on the form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_page_shows_the_secret_once_to_its_session() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let mut web = p.web_session(&a).await;
        let other = p.web_session(&p.login("a@example.com").await).await;

        for days in ["4294967296", "-1", "0", "1e3", "367", ""] {
            let form = [("name", "x"), ("expires_in_days", days), ("csrf_token", &web.csrf)];
            let (status, _, html) =
                p.web("POST", "/settings/tokens", &web.cookie, Some(&form), Some(&web.csrf)).await;
            assert!(status.is_client_error(), "{days:?}: {status}");
            assert!(html.contains("Choose how long the token works"), "{days:?}");
        }
        assert_eq!(token_rows(&p), 0);
        // Without the page's CSRF token: refused.
        let form = [("name", "x"), ("expires_in_days", "30")];
        let (status, _, _) =
            p.web("POST", "/settings/tokens", &web.cookie, Some(&form), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(token_rows(&p), 0);

        let csrf = web.csrf.clone();
        let form = [("name", "web"), ("expires_in_days", "never"), ("csrf_token", csrf.as_str())];
        let to = p.post_redirects(&mut web, "/settings/tokens", &form).await;
        assert!(!to.contains("custard_pat_"), "{to}");
        // Another session of the same user first: nothing.
        let seen = p.page(&other, &to).await;
        assert!(!seen.contains("custard_pat_"), "another session saw the secret");
        let (status, headers, html) = p.web("GET", &to, &web.cookie, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let marker = "id=\"token-secret\" class=\"secret\">";
        let start = html.find(marker).expect("the secret shown") + marker.len();
        let secret: String = html[start..].chars().take_while(|c| *c != '<').collect();
        assert!(custard_server::auth::is_personal_token(&secret), "{secret}");
        p.ok(StatusCode::OK, "GET", "/api/v1/connections", &secret, None).await;
        // Reloaded: gone, the token listed.
        let again = p.page(&web, &to).await;
        assert!(!again.contains(&secret), "shown twice");
        assert!(again.contains(">web</td>"), "listed");
    })
    .await;
}
