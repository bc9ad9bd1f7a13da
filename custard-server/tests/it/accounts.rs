//! Accounts, second round: other sessions signed out, the verification email
//! sent again, users in no organisation, invitations sent again and named on
//! their page, the organisation deleted, and settings errors beside their
//! control.

use super::*;

/// A member of the owner's organisation with `role`: invited by `owner`,
/// signed up through the link and logged in; (user id, access token).
async fn member_of(s: &Server, owner: &str, email: &str, role: &str) -> (String, String) {
    let before = s.sink.messages().len();
    let (status, _, reply) = invite(s, owner, email, role).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let token = token_for(s, before + 1, email, "/accept-invitation").await;
    let (status, reply) = join_with(s, email, &token).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let access = s.login(email, PASSWORD).await;
    (reply["user"]["id"].as_str().expect("id").to_owned(), access)
}

/// Whether an access token still works.
async fn works(s: &Server, token: &str) -> bool {
    s.call("GET", "/api/v1/auth/profile", Some(token), None).await.0 == StatusCode::OK
}

/// The `location` header of a reply.
fn location(headers: &axum::http::HeaderMap) -> &str {
    headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("<none>")
}

#[tokio::test]
async fn changing_the_password_signs_out_every_other_session_even_after_a_restart() {
    bounded(async {
        let s = server().await;
        s.verified_user("me@example.com", "Mine", 0).await;
        let changer = s.login("me@example.com", PASSWORD).await;
        let other_app = s.login("me@example.com", PASSWORD).await;
        let mut browser = Visitor::new(&s);
        browser.sign_in("me@example.com", PASSWORD).await;
        assert_eq!(browser.get("/settings").await.0, StatusCode::OK);

        let new = "an entirely new passphrase";
        let body = json!({"current_password": PASSWORD, "new_password": new});
        let (status, reply) =
            s.call("POST", "/api/v1/auth/change-password", Some(&changer), Some(body)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{reply}");
        assert!(works(&s, &changer).await, "the session that changed it stays");
        assert!(!works(&s, &other_app).await, "another API token is out");
        let (status, headers, _) = browser.get("/settings").await;
        assert_eq!(
            (status, location(&headers)),
            (StatusCode::SEE_OTHER, "/login?next=%2Fsettings"),
            "the browser is out"
        );

        // A server started afresh on the same data keeps them out.
        let data_dir = s._dir.path().to_str().expect("utf-8");
        let smtp = s.sink.url();
        let config = ServerConfig::parse_from([
            "custard-server",
            "--data-dir",
            data_dir,
            "--smtp-url",
            &smtp,
        ]);
        let restarted = Server {
            app: app(AppState::open(config).await.expect("state")),
            state: s.state.clone(),
            sink: SmtpSink::start().await,
            _dir: tempfile::tempdir().expect("tempdir"),
        };
        assert!(works(&restarted, &changer).await);
        assert!(!works(&restarted, &other_app).await, "revoked for good");
    })
    .await;
}

#[tokio::test]
async fn signing_out_other_sessions_keeps_only_this_one() {
    bounded(async {
        let s = server().await;
        s.verified_user("me@example.com", "Mine", 0).await;
        let mine = s.login("me@example.com", PASSWORD).await;
        let others =
            [s.login("me@example.com", PASSWORD).await, s.login("me@example.com", PASSWORD).await];
        s.verified_user("else@example.com", "Theirs", 1).await;
        let someone_else = s.login("else@example.com", PASSWORD).await;

        let (status, reply) = s.call("POST", "/api/v1/auth/logout-others", Some(&mine), None).await;
        assert_eq!((status, &reply["signed_out"]), (StatusCode::OK, &json!(3)), "{reply}");
        assert!(works(&s, &mine).await);
        for token in &others {
            assert!(!works(&s, token).await);
        }
        assert!(works(&s, &someone_else).await, "another account is untouched");
        let (status, _) = s.call("POST", "/api/v1/auth/logout-others", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // The settings page's button: this browser stays, the other one goes.
        let mut here = Visitor::new(&s);
        here.sign_in("me@example.com", PASSWORD).await;
        let mut there = Visitor::new(&s);
        there.sign_in("me@example.com", PASSWORD).await;
        let csrf = here.form("/settings").await;
        let (_, _, html) = here.get("/settings").await;
        assert!(html.contains("action=\"/settings/sessions\""), "{html}");
        here.assert_csrf_refused("/settings/sessions", &[]).await;
        assert_eq!(there.get("/settings").await.0, StatusCode::OK, "nothing happened yet");
        let (status, headers, _) = here.post("/settings/sessions", &[("csrf_token", &csrf)]).await;
        assert_eq!(
            (status, location(&headers)),
            (StatusCode::SEE_OTHER, "/settings?done=others#sessions")
        );
        let (status, _, html) = here.get("/settings?done=others").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains("Every other browser and app signed in to your account is signed out")
        );
        assert_eq!(
            there.get("/settings").await.0,
            StatusCode::SEE_OTHER,
            "the other browser is out"
        );
        assert!(!works(&s, &mine).await, "and so is the API token");
    })
    .await;
}

#[tokio::test]
async fn the_verification_email_is_sent_again_without_saying_who_has_an_account() {
    bounded(async {
        let limits = Limits { per_ip: 100, per_account: 3, replenish: Duration::from_secs(600) };
        let s = server_with(limits).await;
        s.signup("late@example.com", "Late").await;
        s.sink.wait_for(1, Duration::from_secs(10)).await;
        s.verified_user("done@example.com", "Done", 1).await;
        let resend = |email: &str| {
            s.call("POST", "/api/v1/auth/resend-verification", None, Some(json!({"email": email})))
        };

        let answers = [
            resend("late@example.com").await,
            resend("nobody@example.com").await,
            resend("done@example.com").await,
        ];
        for (status, reply) in &answers {
            assert_eq!(*status, StatusCode::ACCEPTED, "{reply}");
        }
        assert!(answers.windows(2).all(|w| w[0].1 == w[1].1), "one answer for all: {answers:?}");
        let token = token_for(&s, 3, "late@example.com", "/verify-email").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent: Vec<Vec<String>> = s.sink.messages().iter().map(|m| m.to.clone()).collect();
        assert_eq!(sent.len(), 3, "nothing to the unknown or verified address: {sent:?}");
        let (status, _) =
            s.call("POST", "/api/v1/auth/verify-email", None, Some(json!({"token": token}))).await;
        assert_eq!(status, StatusCode::OK, "the new link verifies");
        s.login("late@example.com", PASSWORD).await;

        // Sign-up and resends share one budget per address.
        let (status, _, reply) = s
            .with_headers(
                "POST",
                "/api/v1/auth/resend-verification",
                None,
                Some(&json!({"email": "late@example.com"}).to_string()),
            )
            .await;
        assert_eq!((status, code(&reply)), (StatusCode::ACCEPTED, "<none>"));
        let (status, headers, reply) = s
            .with_headers(
                "POST",
                "/api/v1/auth/resend-verification",
                None,
                Some(&json!({"email": "LATE@example.com"}).to_string()),
            )
            .await;
        assert_eq!((status, code(&reply)), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
        assert!(retry_after(&headers) >= 1);
    })
    .await;
}

#[tokio::test]
async fn web_pages_offer_to_send_the_verification_email_again() {
    bounded(async {
        let s = server().await;
        let mut v = Visitor::new(&s);
        let csrf = v.form("/signup").await;
        let fields = [
            ("first_name", "Grace"),
            ("last_name", "Hopper"),
            ("email", "grace@example.com"),
            ("password", PASSWORD),
            ("organization_name", "Compilers"),
            ("csrf_token", &csrf),
        ];
        let (status, headers, _) = v.post("/signup", &fields).await;
        assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/signup?sent=1"));
        let (_, _, html) = v.get("/signup?sent=1").await;
        assert!(html.contains("action=\"/resend-verification\""), "{html}");
        assert!(html.contains("value=\"grace@example.com\""), "the address, once: {html}");
        s.sink.wait_for(1, Duration::from_secs(10)).await;

        // The sign-in error of an unverified account has the button too.
        let csrf = v.form("/login").await;
        let pairs = [("email", "grace@example.com"), ("password", PASSWORD), ("csrf_token", &csrf)];
        let (status, _, html) = v.post("/login", &pairs).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(html.contains("Verify your email first"), "{html}");
        assert!(html.contains("Send the verification link again"), "{html}");
        assert!(html.contains("name=\"email\" value=\"grace@example.com\""), "{html}");
        let (_, _, html) = v.get("/login").await;
        assert!(!html.contains("Send the verification link again"), "only after that error");

        v.assert_csrf_refused("/resend-verification", &[("email", "grace@example.com")]).await;
        let csrf = v.form("/resend-verification").await;
        let (status, _, html) =
            v.post("/resend-verification", &[("email", " "), ("csrf_token", &csrf)]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(html.contains("id=\"email-error\""), "{html}");
        for email in ["grace@example.com", "stranger@example.com"] {
            let pairs = [("email", email), ("csrf_token", &csrf)];
            let (status, headers, _) = v.post("/resend-verification", &pairs).await;
            assert_eq!(
                (status, location(&headers)),
                (StatusCode::SEE_OTHER, "/resend-verification?sent=1")
            );
            let (_, _, html) = v.get("/resend-verification?sent=1").await;
            assert!(
                html.contains(&format!("If {email} has an account that waits for verification")),
                "{html}"
            );
        }
        let token = token_for(&s, 2, "grace@example.com", "/verify-email").await;
        let (status, _, html) = v.get(&format!("/verify-email?token={}", encoded(&token))).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(s.sink.messages().len(), 2, "nothing to the address without an account");
    })
    .await;
}

#[tokio::test]
async fn a_removed_member_creates_an_organisation_or_accepts_an_invitation() {
    bounded(async {
        let s = server().await;
        let (_, owner) = s.verified_user("boss@example.com", "Team", 0).await;
        let (_, other_owner) = s.verified_user("host@example.com", "Host team", 1).await;
        let (gone_id, gone_token) = member_of(&s, &owner, "gone@example.com", "member").await;
        let (left_id, _) = member_of(&s, &owner, "left@example.com", "member").await;
        let mut gone = Visitor::new(&s);
        gone.sign_in("gone@example.com", PASSWORD).await;
        let mut left = Visitor::new(&s);
        left.sign_in("left@example.com", PASSWORD).await;
        for id in [&gone_id, &left_id] {
            let path = format!("/api/v1/org/members/{id}");
            assert_eq!(s.call("DELETE", &path, Some(&owner), None).await.0, StatusCode::NO_CONTENT);
        }
        let before = s.sink.messages().len();
        let (status, _, _) = invite(&s, &other_owner, "gone@example.com", "admin").await;
        assert_eq!(status, StatusCode::CREATED);
        s.sink.wait_for(before + 1, Duration::from_secs(10)).await;

        // The API says what happened; the web leads to the page that helps.
        assert!(!works(&s, &gone_token).await);
        let body = json!({"email": "gone@example.com", "password": PASSWORD});
        let (status, reply) = s.call("POST", "/api/v1/auth/login", None, Some(body)).await;
        assert_eq!((status, code(&reply)), (StatusCode::FORBIDDEN, "forbidden"));
        assert!(reply["error"]["message"].as_str().unwrap().contains("create one"), "{reply}");
        let (_, headers, _) = gone.get("/settings").await;
        assert_eq!(location(&headers), "/login?next=%2Fsettings");
        let (status, headers, _) = gone.get("/login?next=%2Fsettings").await;
        assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/welcome"));
        let csrf = gone.form("/welcome").await;
        let (_, _, html) = gone.get("/welcome").await;
        assert!(
            html.contains("You are not in an organisation") && html.contains("gone@example.com")
        );
        assert!(
            html.contains("Host team") && html.contains("Ada Lovelace (host@example.com)"),
            "{html}"
        );
        assert!(html.contains("action=\"/welcome/organisation\""), "{html}");
        assert!(!html.contains("class=\"nav\""), "no menu that leads nowhere");

        // A fresh sign-in lands there too.
        let mut again = Visitor::new(&s);
        let token = again.form("/login").await;
        let pairs = [("email", "left@example.com"), ("password", PASSWORD), ("csrf_token", &token)];
        let (status, headers, _) = again.post("/login", &pairs).await;
        assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/welcome"));

        // Accepting a listed invitation moves the session into that organisation.
        let list = s.call("GET", "/api/v1/org/invitations", Some(&other_owner), None).await.1;
        let id = list["invitations"][0]["id"].as_str().expect("id").to_owned();
        let path = format!("/welcome/invitations/{id}/accept");
        gone.assert_csrf_refused(&path, &[]).await;
        let left_csrf = left.form("/welcome").await;
        let (status, _, html) = left.post(&path, &[("csrf_token", &left_csrf)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "not for left@: {html}");
        assert!(html.contains("id=\"no-invitations\""), "{html}");
        assert!(
            html.contains("role=\"alert\" tabindex=\"-1\" autofocus>The invitation is unknown")
        );
        let (status, headers, _) = gone.post(&path, &[("csrf_token", &csrf)]).await;
        assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/"));
        let (status, _, html) = gone.get("/settings").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Host team") && html.contains("Your role: admin."), "{html}");
        let (_, headers, _) = gone.get("/welcome").await;
        assert_eq!(location(&headers), "/", "a member has nothing to do there");

        // Creating one: a name is needed, then the user owns it.
        let csrf = left.form("/welcome").await;
        let (status, _, html) =
            left.post("/welcome/organisation", &[("name", " "), ("csrf_token", &csrf)]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(html.contains("Organisation name must be 1 to 100 characters."), "{html}");
        assert!(
            html.contains("aria-describedby=\"organization_name-hint organization_name-error\"")
        );
        let (status, headers, _) = left
            .post("/welcome/organisation", &[("name", "Fresh start"), ("csrf_token", &csrf)])
            .await;
        assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/"));
        let (_, _, html) = left.get("/settings").await;
        assert!(html.contains("Fresh start") && html.contains("Your role: owner."), "{html}");
    })
    .await;
}

#[tokio::test]
async fn invitations_are_sent_again_with_a_fresh_link_within_the_limits() {
    use custard_server::rate_limit::INVITATIONS_PER_RECIPIENT;
    bounded(async {
        let s = server().await;
        let (_, owner) = s.verified_user("boss@example.com", "Team", 0).await;
        let (_, admin) = member_of(&s, &owner, "admin@example.com", "admin").await;
        let (_, _, first) = invite(&s, &owner, "guest@example.com", "member").await;
        let old = token_for(&s, 3, "guest@example.com", "/accept-invitation").await;
        let (_, _, boss) = invite(&s, &owner, "boss2@example.com", "owner").await;
        let id = first["id"].as_str().expect("id");
        let path = format!("/api/v1/org/invitations/{id}/resend");

        let (status, reply) = s.call("POST", &path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(
            (&reply["id"], &reply["invited_by_email"]),
            (&json!(id), &json!("admin@example.com"))
        );
        let new = token_for(&s, 5, "guest@example.com", "/accept-invitation").await;
        assert_ne!(new, old);
        let mail = newest_mail(&s, 5).await;
        assert!(mail.contains("New Member invited you to join the organisation Team"), "{mail}");
        let (status, reply) = join_with(&s, "guest@example.com", &old).await;
        assert_eq!((status, code(&reply)), (StatusCode::BAD_REQUEST, "invalid_token"), "old link");

        let owner_path = format!("/api/v1/org/invitations/{}/resend", boss["id"].as_str().unwrap());
        let refused = [
            (owner_path.as_str(), &admin, StatusCode::FORBIDDEN, "forbidden"),
            ("/api/v1/org/invitations/nope/resend", &owner, StatusCode::NOT_FOUND, "not_found"),
        ];
        for (path, token, status, want) in refused {
            let (got, reply) = s.call("POST", path, Some(token), None).await;
            assert_eq!((got, code(&reply)), (status, want), "{path}");
        }
        // The recipient's limit counts resends too: the first invitation and
        // one resend so far.
        for _ in 2..INVITATIONS_PER_RECIPIENT {
            assert_eq!(s.call("POST", &path, Some(&owner), None).await.0, StatusCode::OK);
        }
        let (status, headers, reply) = s.with_headers("POST", &path, Some(&owner), None).await;
        assert_eq!((status, code(&reply)), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
        assert!(retry_after(&headers) >= 1);

        // The newest link works.
        let count = s.sink.messages().len();
        let newest = token_for(&s, count, "guest@example.com", "/accept-invitation").await;
        assert_eq!(join_with(&s, "guest@example.com", &newest).await.0, StatusCode::CREATED);
    })
    .await;
}

#[tokio::test]
async fn web_settings_list_invitations_with_resend_and_revoke() {
    bounded(async {
        let s = server().await;
        let (_, owner_token) = s.verified_user("boss@example.com", "Team", 0).await;
        let (_, _, created) = invite(&s, &owner_token, "pending@example.com", "admin").await;
        let id = created["id"].as_str().expect("id").to_owned();
        let mut owner = Visitor::new(&s);
        owner.sign_in("boss@example.com", PASSWORD).await;
        let csrf = owner.form("/settings").await;
        let (_, _, html) = owner.get("/settings").await;
        for text in [
            "pending@example.com",
            "boss@example.com",
            "data-show=\"relative\"",
            &format!("action=\"/settings/invitations/{id}/resend\""),
        ] {
            assert!(html.contains(text), "{text}: {html}");
        }
        let path = format!("/settings/invitations/{id}/resend");
        owner.assert_csrf_refused(&path, &[]).await;
        let (status, headers, _) = owner.post(&path, &[("csrf_token", &csrf)]).await;
        assert_eq!(
            (status, location(&headers)),
            (StatusCode::SEE_OTHER, "/settings?done=resent#invitations")
        );
        let (_, _, html) = owner.get("/settings?done=resent").await;
        assert!(html.contains("The invitation is sent again with a new link"), "{html}");
        s.sink.wait_for(3, Duration::from_secs(10)).await;

        // An unknown invitation: the error in the invitations' list, in view.
        let (status, _, html) =
            owner.post("/settings/invitations/nope/resend", &[("csrf_token", &csrf)]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let invitations = html.find("id=\"invitations\"").expect("the list");
        let error = html.find("Not found.").expect("the message");
        assert!(error > invitations, "{html}");
    })
    .await;
}

#[tokio::test]
async fn the_invitation_page_names_the_organisation_and_who_it_is_for() {
    bounded(async {
        let s = server().await;
        let (_, owner) = s.verified_user("host@example.com", "Host team", 0).await;
        s.verified_user("other@example.com", "Other team", 1).await;
        invite(&s, &owner, "guest@example.com", "admin").await;
        let secret = token_for(&s, 3, "guest@example.com", "/accept-invitation").await;
        let path = format!("/accept-invitation?token={}", encoded(&secret));

        let mut visitor = Visitor::new(&s);
        let (status, _, html) = visitor.get(&path).await;
        assert_eq!(status, StatusCode::OK);
        for text in [
            "Join Host team",
            "Ada Lovelace (host@example.com)",
            "guest@example.com, as admin",
            "value=\"guest@example.com\" readonly",
        ] {
            assert!(html.contains(text), "{text}: {html}");
        }

        // Signed in with another address: no button, but how to accept it.
        let mut other = Visitor::new(&s);
        other.sign_in("other@example.com", PASSWORD).await;
        let csrf = other.form(&path).await;
        let (_, _, html) = other.get(&path).await;
        assert!(
            html.contains("This invitation is for <strong>guest@example.com</strong>, but you are signed in as <strong>other@example.com</strong>"),
            "{html}"
        );
        assert!(!html.contains("action=\"/accept-invitation\""), "no accept button: {html}");
        assert!(html.contains(&format!("name=\"next\" value=\"{}\"", path.replace('&', "&amp;"))), "{html}");
        let (status, _, html) =
            other.post("/accept-invitation", &[("token", &secret), ("csrf_token", &csrf)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
        let (_, list) = s.call("GET", "/api/v1/org/members", Some(&owner), None).await;
        assert_eq!(list["members"].as_array().unwrap().len(), 1, "nobody joined");
        let (status, headers, _) =
            other.post("/logout", &[("next", &path), ("csrf_token", &csrf)]).await;
        assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, path.as_str()));
        let (_, _, html) = other.get(&path).await;
        assert!(html.contains("Create account and join"), "signed out, the sign-up form: {html}");
        for next in ["https://evil.example/", "//evil.example"] {
            let mut v = Visitor::new(&s);
            v.sign_in("other@example.com", PASSWORD).await;
            let csrf = v.form("/settings").await;
            let (_, headers, _) = v.post("/logout", &[("next", next), ("csrf_token", &csrf)]).await;
            assert_eq!(location(&headers), "/", "{next}");
        }

        // A link that does not work says so at once, with no form.
        let (status, _, html) = visitor.get("/accept-invitation?token=nope").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(html.contains("This invitation does not work") && !html.contains("<form method=\"post\" action=\"/accept-invitation\""));
    })
    .await;
}

#[tokio::test]
async fn settings_errors_stay_beside_their_control() {
    bounded(async {
        let s = server().await;
        let (owner_id, _) = s.verified_user("boss@example.com", "Team", 0).await;
        let mut owner = Visitor::new(&s);
        owner.sign_in("boss@example.com", PASSWORD).await;
        let csrf = owner.form("/settings").await;
        let (_, _, html) = owner.get("/settings").await;
        let role_action = format!("action=\"/settings/members/{owner_id}/role\"");
        assert!(html.contains(&role_action), "{html}");
        assert_eq!(html.matches("<th scope=\"col\">Role</th>").count(), 1, "one role column: {html}");

        // The last owner: the error on the owner's row, its select focused.
        let path = format!("/settings/members/{owner_id}/role");
        let (status, _, html) = owner.post(&path, &[("role", "member"), ("csrf_token", &csrf)]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let row = html.find(&format!("id=\"member-{owner_id}\"")).expect("the row");
        let error = html.find(&format!("id=\"member-{owner_id}-role-error\" role=\"alert\"")).expect("the error");
        let row_end = row + html[row..].find("</tr>").expect("the row's end");
        assert!(row < error && error < row_end, "the error is in the row: {html}");
        assert!(html.contains(&format!("aria-describedby=\"member-{owner_id}-role-error\" autofocus")));

        // A wrong confirmation keeps the delete section open, the error by the input.
        let (_, _, html) = owner.get("/settings").await;
        assert!(html.contains("Delete Team…") && !html.contains("<details open>"), "closed: {html}");
        let delete = "/settings/organisation/delete";
        owner.assert_csrf_refused(delete, &[("confirm", "Team")]).await;
        let (status, _, html) = owner.post(delete, &[("confirm", "team"), ("csrf_token", &csrf)]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(html.contains("<details open>"), "{html}");
        assert!(html.contains("id=\"delete_confirm-error\" role=\"alert\">The name does not match"), "{html}");
        assert!(html.contains("value=\"team\" aria-invalid=\"true\" aria-describedby=\"delete_confirm-error\" autofocus"), "{html}");
        let (status, _) = s.call("GET", "/api/v1/org", Some(&s.login("boss@example.com", PASSWORD).await), None).await;
        assert_eq!(status, StatusCode::OK, "nothing was deleted");
    })
    .await;
}

#[tokio::test]
async fn owners_delete_the_organisation_and_its_members_are_left_in_none() {
    bounded(async {
        let s = server().await;
        let (_, owner) = s.verified_user("boss@example.com", "Team", 0).await;
        let (_, admin) = member_of(&s, &owner, "admin@example.com", "admin").await;
        let (status, reply) = s
            .call(
                "POST",
                "/api/v1/connections",
                Some(&owner),
                Some(json!({"name": "Shop", "db_type": "postgresql"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        let (status, reply) = s.call("DELETE", "/api/v1/org", Some(&admin), None).await;
        assert_eq!((status, code(&reply)), (StatusCode::FORBIDDEN, "forbidden"), "owners only");

        // An admin's page has no delete section, and the form is refused in view.
        let mut admin_browser = Visitor::new(&s);
        admin_browser.sign_in("admin@example.com", PASSWORD).await;
        let csrf = admin_browser.form("/settings").await;
        let (_, _, html) = admin_browser.get("/settings").await;
        assert!(!html.contains("/settings/organisation/delete"), "{html}");
        let (status, _, html) = admin_browser
            .post("/settings/organisation/delete", &[("confirm", "Team"), ("csrf_token", &csrf)])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(html.contains("Only owners may delete the organisation."), "{html}");

        let mut browser = Visitor::new(&s);
        browser.sign_in("boss@example.com", PASSWORD).await;
        let csrf = browser.form("/settings").await;
        let (status, headers, _) = browser
            .post("/settings/organisation/delete", &[("confirm", " Team "), ("csrf_token", &csrf)])
            .await;
        assert_eq!((status, location(&headers)), (StatusCode::SEE_OTHER, "/welcome?done=deleted"));
        let (status, _, html) = browser.get("/welcome?done=deleted").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("The organisation is deleted"), "{html}");
        for token in [&owner, &admin] {
            let (status, _) = s.call("GET", "/api/v1/org", Some(token), None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let (status, reply) = s
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": "admin@example.com", "password": PASSWORD})),
            )
            .await;
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "in no organisation"
        );

        // Through the API too.
        let (_, other) =
            s.verified_user("other@example.com", "Other", s.sink.messages().len()).await;
        assert_eq!(
            s.call("DELETE", "/api/v1/org", Some(&other), None).await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            s.call("GET", "/api/v1/org", Some(&other), None).await.0,
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
}
