//! Store tests, written against `dyn Store` so a PostgreSQL store can reuse them.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tempfile::TempDir;

use super::migrations::{MIGRATIONS, latest_version};
use super::*;

/// Every test finishes within this or fails.
const TEST_DEADLINE: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test).await.expect("test timed out")
}

/// A fresh store in its own temporary data dir.
struct Fixture {
    dir: TempDir,
    store: Arc<dyn Store>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(SqliteStore::open(&db_path(&dir)).expect("open store"));
        Fixture { dir, store }
    }

    fn path(&self) -> PathBuf {
        db_path(&self.dir)
    }

    /// Closes the store and opens the same file again.
    fn reopen(&mut self) {
        self.store = Arc::new(SqliteStore::open(&self.path()).expect("reopen store"));
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("custard.db")
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        first_name: "Ada".to_owned(),
        last_name: "Lovelace".to_owned(),
    }
}

/// A token hash as the store sees it: opaque hex (the SHA-256 of a secret in production).
fn fresh_hash() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn in_hours(hours: i64) -> DateTime<Utc> {
    Utc::now() + TimeDelta::hours(hours)
}

/// Adds a new user with `email` to `org` with `role`, through an invitation.
async fn join(store: &dyn Store, org: &OrgId, email: &str, role: Role) -> User {
    let user = store.create_user(new_user(email)).await.expect("create user");
    let hash = fresh_hash();
    let token = NewToken::invitation(org, email, role, hash.clone(), in_hours(1));
    store.create_token(token).await.expect("create invitation");
    store.accept_invitation(&hash, &user.id, Utc::now()).await.expect("accept");
    user
}

fn raw(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("raw connection")
}

#[test]
fn migrations_are_numbered_from_one_without_gaps() {
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version, i as i64 + 1, "migration {}", m.name);
        // The runner owns the transaction; a migration must not end it.
        let ends_tx = m.sql.lines().any(|line| {
            let first = line.split_whitespace().next().unwrap_or("").to_uppercase();
            first.starts_with("COMMIT") || first.starts_with("ROLLBACK")
        });
        assert!(!ends_tx, "migration {} ends the transaction", m.name);
    }
    assert_eq!(latest_version(), MIGRATIONS.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_and_reopening_is_idempotent() {
    bounded(async {
        let mut fx = Fixture::new();
        fx.store.ping().await.expect("ping");
        let path = fx.path();
        let applied = || -> Vec<(i64, String, i64)> {
            let conn = raw(&path);
            let mut stmt = conn
                .prepare("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
                .expect("prepare");
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        let first = applied();
        let expected: Vec<_> = MIGRATIONS.iter().map(|m| (m.version, m.name.to_owned())).collect();
        let got: Vec<_> = first.iter().map(|(v, n, _)| (*v, n.clone())).collect();
        assert_eq!(got, expected);
        fx.reopen();
        fx.reopen();
        assert_eq!(applied(), first, "reopening must not re-apply migrations");
        fx.store.ping().await.expect("ping after reopen");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_binary_is_refused() {
    bounded(async {
        let fx = Fixture::new();
        let newer = latest_version() + 1;
        raw(&fx.path())
            .execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'future', 0)",
                [newer],
            )
            .expect("insert future migration");
        match SqliteStore::open(&fx.path()) {
            Err(StoreError::SchemaTooNew { found, known }) => {
                assert_eq!((found, known), (newer, latest_version()));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_are_unique_case_insensitively() {
    bounded(async {
        // (first email, second email, second is a conflict)
        let cases = [
            ("ada@example.com", "ada@example.com", true),
            ("ada@example.com", "ADA@Example.COM", true),
            ("Ada@Example.com", "  ada@example.com ", true),
            ("ÉMILE@example.com", "émile@example.com", true),
            ("ada@example.com", "ada2@example.com", false),
        ];
        for (first, second, conflict) in cases {
            let fx = Fixture::new();
            let a = fx.store.create_user_with_org(new_user(first), "A".into()).await.expect(first);
            assert_eq!(a.user.email, normalize_email(first));
            let b = fx.store.create_user_with_org(new_user(second), "B".into()).await;
            match (b, conflict) {
                (Err(StoreError::Conflict(ConflictKind::Email)), true) | (Ok(_), false) => {}
                (got, _) => panic!("{first} then {second}: got {got:?}"),
            }
            let found = fx.store.get_user_by_email(&second.to_uppercase()).await;
            assert!(found.is_ok(), "{second} is findable in any case");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sign_up_leaves_nothing_behind() {
    bounded(async {
        let fx = Fixture::new();
        // The organisation insert fails (empty name), after the user insert succeeded.
        let failed =
            fx.store.create_user_with_org(new_user("ada@example.com"), String::new()).await;
        assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
        let lookup = fx.store.get_user_by_email("ada@example.com").await;
        assert!(matches!(lookup, Err(StoreError::NotFound)), "{lookup:?}");

        let ok = fx.store.create_user_with_org(new_user("ada@example.com"), "Analytical".into());
        let ok = ok.await.expect("sign up");
        assert_eq!(ok.membership.role, Role::Owner);
        assert_eq!(ok.organization.name, "Analytical");
        // A duplicate sign-up creates no second organisation either.
        let dup = fx.store.create_user_with_org(new_user("ADA@example.com"), "Other".into()).await;
        assert!(matches!(dup, Err(StoreError::Conflict(ConflictKind::Email))), "{dup:?}");
        let counts: (i64, i64, i64) = raw(&fx.path())
            .query_row(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM organizations),
                        (SELECT count(*) FROM memberships)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("counts");
        assert_eq!(counts, (1, 1, 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_scoped_queries_never_reach_another_organisation() {
    bounded(async {
        let fx = Fixture::new();
        let store = fx.store.as_ref();
        let a = store.create_user_with_org(new_user("a@example.com"), "A".into()).await.expect("a");
        let b = store.create_user_with_org(new_user("b@example.com"), "B".into()).await.expect("b");
        let (org_a, org_b) = (&a.organization.id, &b.organization.id);
        let (user_a, user_b) = (&a.user.id, &b.user.id);
        let unknown = OrgId::from("no-such-org".to_owned());
        type Probe<'a> = BoxFuture<'a, Result<(), StoreError>>;
        // Every organisation-scoped operation, aimed at the wrong organisation.
        let probes: Vec<(&str, Probe<'_>)> = vec![
            (
                "get_membership b/a",
                Box::pin(async { store.get_membership(org_b, user_a).await.map(drop) }),
            ),
            (
                "get_membership a/b",
                Box::pin(async { store.get_membership(org_a, user_b).await.map(drop) }),
            ),
            (
                "set_role b/a",
                Box::pin(async { store.set_role(org_b, user_a, Role::Admin).await.map(drop) }),
            ),
            (
                "set_role a/b",
                Box::pin(async { store.set_role(org_a, user_b, Role::Member).await.map(drop) }),
            ),
            ("remove_member b/a", Box::pin(async { store.remove_member(org_b, user_a).await })),
            ("remove_member a/b", Box::pin(async { store.remove_member(org_a, user_b).await })),
            (
                "list_members unknown",
                Box::pin(async { store.list_members(&unknown).await.map(drop) }),
            ),
            (
                "get_organization unknown",
                Box::pin(async { store.get_organization(&unknown).await.map(drop) }),
            ),
        ];
        for (name, probe) in probes {
            let got = probe.await;
            assert!(matches!(got, Err(StoreError::NotFound)), "{name}: {got:?}");
        }
        // Nothing changed, and each organisation lists only its own member.
        for (org, user) in [(org_a, user_a), (org_b, user_b)] {
            let members = store.list_members(org).await.expect("members");
            let ids: Vec<_> = members.iter().map(|m| (&m.user_id, m.role)).collect();
            assert_eq!(ids, vec![(user, Role::Owner)]);
            let orgs = store.organizations_of_user(user).await.expect("orgs of user");
            assert_eq!(orgs.len(), 1);
            assert_eq!(&orgs[0].0.id, org);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_always_keeps_an_owner() {
    bounded(async {
        let fx = Fixture::new();
        let store = fx.store.as_ref();
        let signup =
            store.create_user_with_org(new_user("o@example.com"), "Org".into()).await.expect("o");
        let org = &signup.organization.id;
        let owner = signup.user;
        let admin = join(store, org, "x@example.com", Role::Admin).await;
        let member = join(store, org, "m@example.com", Role::Member).await;

        enum Op<'a> {
            Remove(&'a User),
            SetRole(&'a User, Role),
        }
        enum Want {
            Ok,
            LastOwner,
            NotFound,
        }
        let steps = [
            (Op::Remove(&owner), Want::LastOwner),
            (Op::SetRole(&owner, Role::Admin), Want::LastOwner),
            (Op::SetRole(&owner, Role::Member), Want::LastOwner),
            (Op::SetRole(&owner, Role::Owner), Want::Ok),
            (Op::SetRole(&admin, Role::Owner), Want::Ok),
            (Op::SetRole(&owner, Role::Member), Want::Ok),
            (Op::Remove(&admin), Want::LastOwner),
            (Op::SetRole(&admin, Role::Admin), Want::LastOwner),
            (Op::Remove(&member), Want::Ok),
            (Op::Remove(&member), Want::NotFound),
            (Op::Remove(&owner), Want::Ok),
        ];
        for (i, (op, want)) in steps.into_iter().enumerate() {
            let got = match op {
                Op::Remove(u) => store.remove_member(org, &u.id).await,
                Op::SetRole(u, role) => store.set_role(org, &u.id, role).await.map(|m| {
                    assert_eq!(m.role, role);
                }),
            };
            match (want, &got) {
                (Want::Ok, Ok(()))
                | (Want::LastOwner, Err(StoreError::LastOwner))
                | (Want::NotFound, Err(StoreError::NotFound)) => {}
                _ => panic!("step {i}: got {got:?}"),
            }
        }
        let members = store.list_members(org).await.expect("members");
        let left: Vec<_> = members.iter().map(|m| (m.email.as_str(), m.role)).collect();
        assert_eq!(left, vec![("x@example.com", Role::Owner)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_consumes_exactly_one_wins() {
    bounded(async {
        let fx = Fixture::new();
        // A second store on the same file races through its own connection.
        let other: Arc<dyn Store> = Arc::new(SqliteStore::open(&fx.path()).expect("second store"));
        let user = fx.store.create_user(new_user("ada@example.com")).await.expect("user");
        for round in 0..5 {
            let hash = fresh_hash();
            let token = NewToken::password_reset(&user, hash.clone(), in_hours(1));
            fx.store.create_token(token).await.expect("token");
            let mut tasks = Vec::new();
            for i in 0..8 {
                let store = if i % 2 == 0 { Arc::clone(&fx.store) } else { Arc::clone(&other) };
                let hash = hash.clone();
                tasks.push(tokio::spawn(async move {
                    store.consume_token(TokenKind::PasswordReset, &hash, Utc::now()).await
                }));
            }
            let mut wins = 0;
            for task in tasks {
                match task.await.expect("task") {
                    Ok(token) => {
                        wins += 1;
                        assert!(token.used_at.is_some());
                        assert_eq!(token.user_id.as_ref(), Some(&user.id));
                    }
                    Err(StoreError::NotFound) => {}
                    Err(e) => panic!("round {round}: {e:?}"),
                }
            }
            assert_eq!(wins, 1, "round {round}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_valid_only_for_their_kind_and_until_they_expire() {
    bounded(async {
        let fx = Fixture::new();
        let store = fx.store.as_ref();
        let user = store.create_user(new_user("ada@example.com")).await.expect("user");
        let expires = in_hours(1);
        let ms = TimeDelta::milliseconds;
        use TokenKind::{EmailVerification as Verify, PasswordReset as Reset};
        // (issued kind, consumed kind, consumed at, accepted)
        let cases = [
            (Verify, Verify, Utc::now(), true),
            (Verify, Verify, expires - ms(1), true),
            (Verify, Verify, expires, false),
            (Verify, Verify, expires + TimeDelta::days(1), false),
            (Reset, Reset, Utc::now(), true),
            (Reset, Verify, Utc::now(), false),
            (Verify, Reset, Utc::now(), false),
            (Reset, TokenKind::Invitation, Utc::now(), false),
        ];
        for (issued, consumed, at, accepted) in cases {
            let hash = fresh_hash();
            let token = match issued {
                Verify => NewToken::email_verification(&user, hash.clone(), expires),
                _ => NewToken::password_reset(&user, hash.clone(), expires),
            };
            let stored = store.create_token(token).await.expect("token");
            assert_eq!((stored.kind, stored.used_at), (issued, None));
            let got = store.consume_token(consumed, &hash, at).await;
            match (&got, accepted) {
                (Ok(t), true) => assert_eq!(t.id, stored.id),
                (Err(StoreError::NotFound), false) => {}
                _ => panic!("{issued:?} consumed as {consumed:?} at {at}: {got:?}"),
            }
            // A refused consume leaves the token usable; an accepted one spends it.
            let again = store.consume_token(issued, &hash, Utc::now()).await;
            assert_eq!(again.is_ok(), !accepted, "{issued:?} consumed as {consumed:?} at {at}");
        }
        let unknown = store.consume_token(Verify, &fresh_hash(), Utc::now()).await;
        assert!(matches!(unknown, Err(StoreError::NotFound)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_revoked_one_by_one_or_all_at_once() {
    bounded(async {
        let fx = Fixture::new();
        let store = fx.store.as_ref();
        let ada = store.create_user(new_user("ada@example.com")).await.expect("ada");
        let bob = store.create_user(new_user("bob@example.com")).await.expect("bob");
        let mut ada_sessions = Vec::new();
        for _ in 0..3 {
            ada_sessions.push(store.create_session(&ada.id, in_hours(1)).await.expect("session"));
        }
        let bobs = store.create_session(&bob.id, in_hours(1)).await.expect("bob session");
        let now = Utc::now();
        assert!(ada_sessions.iter().all(|s| s.is_active(now)));
        assert!(!ada_sessions[0].is_active(in_hours(2)), "expired");

        store.revoke_session(&ada_sessions[0].id).await.expect("revoke");
        store.revoke_session(&ada_sessions[0].id).await.expect("revoke twice");
        let first = store.get_session(&ada_sessions[0].id).await.expect("get");
        assert!(!first.is_active(Utc::now()));

        assert_eq!(store.revoke_user_sessions(&ada.id).await.expect("revoke all"), 2);
        for s in &ada_sessions {
            let s = store.get_session(&s.id).await.expect("get");
            assert!(s.revoked_at.is_some(), "{s:?}");
        }
        assert!(store.get_session(&bobs.id).await.expect("bob").is_active(Utc::now()));
        assert_eq!(first.revoked_at, store.get_session(&first.id).await.expect("get").revoked_at);

        let unknown = SessionId::from("nope".to_owned());
        assert!(matches!(store.get_session(&unknown).await, Err(StoreError::NotFound)));
        assert!(matches!(store.revoke_session(&unknown).await, Err(StoreError::NotFound)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_and_reset_consume_their_token() {
    bounded(async {
        let fx = Fixture::new();
        let store = fx.store.as_ref();
        let user = store.create_user(new_user("ada@example.com")).await.expect("user");
        assert!(!user.is_verified());

        let verify = fresh_hash();
        let token = NewToken::email_verification(&user, verify.clone(), in_hours(24));
        store.create_token(token).await.expect("token");
        // A verification token cannot reset the password.
        let wrong = store.reset_password(&verify, "other".into(), Utc::now()).await;
        assert!(matches!(wrong, Err(StoreError::NotFound)));
        let verified = store.verify_email(&verify, Utc::now()).await.expect("verify");
        assert!(verified.is_verified());
        assert!(matches!(store.verify_email(&verify, Utc::now()).await, Err(StoreError::NotFound)));

        let session = store.create_session(&user.id, in_hours(1)).await.expect("session");
        let reset = fresh_hash();
        store
            .create_token(NewToken::password_reset(&user, reset.clone(), in_hours(1)))
            .await
            .expect("token");
        let updated =
            store.reset_password(&reset, "new-hash".into(), Utc::now()).await.expect("reset");
        assert_eq!(updated.password_hash, "new-hash");
        assert!(!store.get_session(&session.id).await.expect("session").is_active(Utc::now()));
        let again = store.reset_password(&reset, "third".into(), Utc::now()).await;
        assert!(matches!(again, Err(StoreError::NotFound)));
        assert_eq!(store.get_user(&user.id).await.expect("user").password_hash, "new-hash");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_admit_only_the_invited_email_once() {
    bounded(async {
        let fx = Fixture::new();
        let store = fx.store.as_ref();
        let owner =
            store.create_user_with_org(new_user("o@example.com"), "Org".into()).await.expect("o");
        let org = &owner.organization.id;
        let invited = store.create_user(new_user("Guest@Example.com")).await.expect("guest");
        let stranger = store.create_user(new_user("stranger@example.com")).await.expect("stranger");

        let hash = fresh_hash();
        let token =
            NewToken::invitation(org, " GUEST@example.com", Role::Admin, hash.clone(), in_hours(1));
        let token = store.create_token(token).await.expect("invitation");
        assert_eq!(token.email, "guest@example.com");

        // Someone else holding the link cannot use it, and it stays usable.
        let wrong = store.accept_invitation(&hash, &stranger.id, Utc::now()).await;
        assert!(matches!(wrong, Err(StoreError::NotFound)), "{wrong:?}");
        let joined = store.accept_invitation(&hash, &invited.id, Utc::now()).await.expect("accept");
        assert_eq!((&joined.org_id, &joined.user_id, joined.role), (org, &invited.id, Role::Admin));
        let twice = store.accept_invitation(&hash, &invited.id, Utc::now()).await;
        assert!(matches!(twice, Err(StoreError::NotFound)), "{twice:?}");

        // An existing member gets a conflict and the invitation is not spent.
        let hash = fresh_hash();
        let again =
            NewToken::invitation(org, "guest@example.com", Role::Member, hash.clone(), in_hours(1));
        store.create_token(again).await.expect("second invitation");
        let dup = store.accept_invitation(&hash, &invited.id, Utc::now()).await;
        assert!(matches!(dup, Err(StoreError::Conflict(ConflictKind::Membership))), "{dup:?}");
        assert!(store.consume_token(TokenKind::Invitation, &hash, Utc::now()).await.is_ok());

        // Signing up through an invitation: verified user and membership at once.
        let hash = fresh_hash();
        let invite =
            NewToken::invitation(org, "new@example.com", Role::Member, hash.clone(), in_hours(1));
        store.create_token(invite).await.expect("third invitation");
        let other_email =
            store.create_user_from_invitation(new_user("x@example.com"), &hash, Utc::now()).await;
        assert!(matches!(other_email, Err(StoreError::NotFound)), "{other_email:?}");
        assert!(matches!(
            store.get_user_by_email("x@example.com").await,
            Err(StoreError::NotFound)
        ));
        let signup = store
            .create_user_from_invitation(new_user("NEW@example.com"), &hash, Utc::now())
            .await
            .expect("sign up by invitation");
        assert!(signup.user.is_verified());
        assert_eq!((&signup.organization.id, signup.membership.role), (org, Role::Member));
        let emails: Vec<_> =
            store.list_members(org).await.expect("members").into_iter().map(|m| m.email).collect();
        assert_eq!(emails, ["o@example.com", "guest@example.com", "new@example.com"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_password_and_verification_updates() {
    bounded(async {
        let fx = Fixture::new();
        let store = fx.store.as_ref();
        let user = store.create_user(new_user("ada@example.com")).await.expect("user");
        let profile = ProfileUpdate { first_name: "Augusta".into(), last_name: "King".into() };
        let updated = store.update_profile(&user.id, profile).await.expect("profile");
        assert_eq!((updated.first_name.as_str(), updated.last_name.as_str()), ("Augusta", "King"));
        assert!(updated.updated_at >= user.updated_at);
        store.set_password_hash(&user.id, "h2".into()).await.expect("password");
        let verified = store.mark_email_verified(&user.id).await.expect("verify");
        let again = store.mark_email_verified(&user.id).await.expect("verify again");
        assert_eq!(verified.email_verified_at, again.email_verified_at, "first time kept");
        let got = store.get_user(&user.id).await.expect("get");
        assert_eq!(got.password_hash, "h2");
        assert_eq!(got, again);
        assert!(!format!("{got:?}").contains("h2"), "Debug hides the password hash");

        let unknown = UserId::from("nope".to_owned());
        let profile = ProfileUpdate { first_name: "a".into(), last_name: "b".into() };
        assert!(matches!(store.get_user(&unknown).await, Err(StoreError::NotFound)));
        assert!(matches!(store.update_profile(&unknown, profile).await, Err(StoreError::NotFound)));
        assert!(matches!(
            store.set_password_hash(&unknown, "h".into()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(store.mark_email_verified(&unknown).await, Err(StoreError::NotFound)));
        // A session for an unknown user violates a foreign key: never silently stored.
        assert!(store.create_session(&unknown, in_hours(1)).await.is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_closing_and_reopening() {
    bounded(async {
        let mut fx = Fixture::new();
        let signup = fx
            .store
            .create_user_with_org(new_user("ada@example.com"), "Analytical".into())
            .await
            .expect("sign up");
        let session = fx.store.create_session(&signup.user.id, in_hours(1)).await.expect("session");
        fx.reopen();
        let user = fx.store.get_user_by_email("ada@example.com").await.expect("user after reopen");
        assert_eq!(user, signup.user);
        assert_eq!(fx.store.get_session(&session.id).await.expect("session"), session);
        let members = fx.store.list_members(&signup.organization.id).await.expect("members");
        assert_eq!(members.len(), 1);
        assert_eq!(
            fx.store.get_organization(&signup.organization.id).await.expect("org"),
            signup.organization
        );
    })
    .await;
}
