//! Store tests, written against `dyn Store` and run on both stores: each test
//! is an `async fn(kind: Kind)`, and `on_both_stores!` at the end of the file
//! makes it a test on SQLite (`sqlite::name`) and on PostgreSQL
//! (`postgres::name`, a scratch database of its own). A test left out of
//! that list is dead code, which the build refuses.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use custard_testkit::ScratchDb;
use tempfile::TempDir;

use super::postgres::{PostgresOptions, Sharing};
use super::sqlite::migrations::{MIGRATIONS, latest_version};
use super::*;

/// Every test finishes within this or fails.
const TEST_DEADLINE: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test).await.expect("test timed out")
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Sqlite,
    Postgres,
}

/// Makes each listed `async fn(kind: Kind)` a test on each store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Kind::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Kind::Postgres).await
                }
            )*
        }
    };
}

/// Sessions signed out together, invitations seen by their recipients,
/// organisations (after the macro, which it uses).
mod accounts;

/// Personal access tokens (after the macro, which it uses).
mod tokens;

/// A fresh store: a file in its own temporary data dir, or a scratch
/// PostgreSQL database dropped with the fixture.
struct Fixture {
    place: Place,
    store: Arc<dyn Store>,
}

/// Where a fixture's data lives.
enum Place {
    Sqlite(TempDir),
    Postgres(ScratchDb),
}

impl Fixture {
    async fn new(kind: Kind) -> Self {
        let place = match kind {
            Kind::Sqlite => Place::Sqlite(tempfile::tempdir().expect("temp dir")),
            Kind::Postgres => Place::Postgres(ScratchDb::create("store").await),
        };
        let store = place.open().await;
        Fixture { place, store }
    }

    /// The SQLite file (SQLite-only tests).
    fn path(&self) -> PathBuf {
        match &self.place {
            Place::Sqlite(dir) => db_path(dir),
            Place::Postgres(_) => panic!("a PostgreSQL fixture has no file"),
        }
    }

    /// Closes the store and opens the same data again.
    async fn reopen(&mut self) {
        self.store = self.place.open().await;
    }

    /// A second store on the same data, as another process would open it.
    async fn another(&self) -> Arc<dyn Store> {
        self.place.open().await
    }

    /// Runs `sql` on the store's database directly, around the store.
    async fn exec(&self, sql: &str) {
        match &self.place {
            Place::Sqlite(dir) => raw(&db_path(dir)).execute_batch(sql).expect(sql),
            Place::Postgres(db) => db.client().await.batch_execute(sql).await.expect(sql),
        }
    }

    /// The rows of `schema_migrations`: version, name and when, as text.
    async fn applied_migrations(&self) -> Vec<(i64, String, String)> {
        match &self.place {
            Place::Sqlite(dir) => {
                let conn = raw(&db_path(dir));
                let mut stmt = conn
                    .prepare(
                        "SELECT version, name, CAST(applied_at AS TEXT) FROM schema_migrations \
                         ORDER BY version",
                    )
                    .expect("prepare");
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows")
            }
            Place::Postgres(db) => db
                .client()
                .await
                .query(
                    "SELECT version, name, applied_at::text FROM schema_migrations ORDER BY version",
                    &[],
                )
                .await
                .expect("migrations")
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        }
    }

    /// The one integer `sql` selects, read directly from the store's database.
    async fn scalar(&self, sql: &str) -> i64 {
        match &self.place {
            Place::Sqlite(dir) => raw(&db_path(dir)).query_row(sql, [], |r| r.get(0)).expect(sql),
            Place::Postgres(db) => {
                db.client().await.query_one(sql, &[]).await.expect(sql).get::<_, i64>(0)
            }
        }
    }
}

impl Place {
    async fn open(&self) -> Arc<dyn Store> {
        self.try_open().await.expect("open store")
    }

    async fn try_open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Place::Sqlite(dir) => Arc::new(SqliteStore::open(&db_path(dir))?),
            Place::Postgres(db) => {
                // Tests open several stores on one database, as replicas would.
                let options = PostgresOptions { sharing: Sharing::Routed, ..Default::default() };
                Arc::new(PostgresStore::open(&db.url, &options).await?)
            }
        })
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

/// An owner of `org`.
async fn an_owner(store: &dyn Store, org: &OrgId) -> UserId {
    let members = store.list_members(org).await.expect("members");
    members.into_iter().find(|m| m.role == Role::Owner).expect("an owner").user_id
}

/// Adds a new user with `email` to `org` with `role`, through an invitation
/// from one of its owners.
async fn join(store: &dyn Store, org: &OrgId, email: &str, role: Role) -> User {
    let user = store.create_user(new_user(email)).await.expect("create user");
    let hash = fresh_hash();
    let owner = an_owner(store, org).await;
    let token = NewToken::invitation(org, &owner, email, role, hash.clone(), in_hours(1));
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

async fn migrations_run_once_and_reopening_is_idempotent(kind: Kind) {
    bounded(async {
        let mut fx = Fixture::new(kind).await;
        fx.store.ping().await.expect("ping");
        let first = fx.applied_migrations().await;
        let expected: Vec<_> =
            migrations_of(kind).iter().map(|m| (m.version, m.name.to_owned())).collect();
        let got: Vec<_> = first.iter().map(|(v, n, _)| (*v, n.clone())).collect();
        assert_eq!(got, expected);
        fx.reopen().await;
        fx.reopen().await;
        assert_eq!(fx.applied_migrations().await, first, "reopening must not re-apply migrations");
        fx.store.ping().await.expect("ping after reopen");
    })
    .await;
}

#[test]
fn postgres_migrations_are_numbered_from_one_without_gaps() {
    let migrations = super::postgres::migrations::MIGRATIONS;
    for (i, m) in migrations.iter().enumerate() {
        assert_eq!(m.version, i as i64 + 1, "migration {}", m.name);
    }
    assert_eq!(super::postgres::migrations::latest_version(), migrations.len() as i64);
}

/// The migrations the store of this kind ships.
fn migrations_of(kind: Kind) -> &'static [Migration] {
    match kind {
        Kind::Sqlite => MIGRATIONS,
        Kind::Postgres => super::postgres::migrations::MIGRATIONS,
    }
}

async fn a_database_from_a_newer_binary_is_refused(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let known = migrations_of(kind).last().map_or(0, |m| m.version);
        let newer = known + 1;
        let applied_at = match kind {
            Kind::Sqlite => "0",
            Kind::Postgres => "now()",
        };
        fx.exec(&format!(
            "INSERT INTO schema_migrations (version, name, applied_at) \
             VALUES ({newer}, 'future', {applied_at})"
        ))
        .await;
        match fx.place.try_open().await {
            Err(StoreError::SchemaTooNew { found, known: k }) => {
                assert_eq!((found, k), (newer, known));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    })
    .await;
}

async fn emails_are_unique_case_insensitively(kind: Kind) {
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
            let fx = Fixture::new(kind).await;
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

async fn a_failed_sign_up_leaves_nothing_behind(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
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
        let counts = (
            fx.scalar("SELECT count(*) FROM users").await,
            fx.scalar("SELECT count(*) FROM organizations").await,
            fx.scalar("SELECT count(*) FROM memberships").await,
        );
        assert_eq!(counts, (1, 1, 1));
    })
    .await;
}

async fn organisation_scoped_queries_never_reach_another_organisation(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
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

async fn an_organisation_always_keeps_an_owner(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
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

async fn of_concurrent_consumes_exactly_one_wins(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        // A second store on the same data races through its own connections.
        let other = fx.another().await;
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

async fn tokens_are_valid_only_for_their_kind_and_until_they_expire(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
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

async fn sessions_are_revoked_one_by_one_or_all_at_once(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = store.create_user(new_user("ada@example.com")).await.expect("ada");
        let bob = store.create_user(new_user("bob@example.com")).await.expect("bob");
        let mut ada_sessions = Vec::new();
        for _ in 0..3 {
            ada_sessions.push(
                store
                    .create_session(
                        &ada.id,
                        in_hours(1),
                        SessionGrant::Password(&ada.password_hash),
                    )
                    .await
                    .expect("session"),
            );
        }
        let bobs = store
            .create_session(&bob.id, in_hours(1), SessionGrant::Password(&bob.password_hash))
            .await
            .expect("bob session");
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

async fn verification_and_reset_consume_their_token(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
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

        let session = store
            .create_session(&user.id, in_hours(1), SessionGrant::Password(&user.password_hash))
            .await
            .expect("session");
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

async fn invitations_admit_only_the_invited_email_once(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let owner =
            store.create_user_with_org(new_user("o@example.com"), "Org".into()).await.expect("o");
        let org = &owner.organization.id;
        let sender = &owner.user.id;
        let invited = store.create_user(new_user("Guest@Example.com")).await.expect("guest");
        let stranger = store.create_user(new_user("stranger@example.com")).await.expect("stranger");

        let hash = fresh_hash();
        let token = NewToken::invitation(
            org,
            sender,
            " GUEST@example.com",
            Role::Admin,
            hash.clone(),
            in_hours(1),
        );
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
        let again = NewToken::invitation(
            org,
            sender,
            "guest@example.com",
            Role::Member,
            hash.clone(),
            in_hours(1),
        );
        store.create_token(again).await.expect("second invitation");
        let dup = store.accept_invitation(&hash, &invited.id, Utc::now()).await;
        assert!(matches!(dup, Err(StoreError::Conflict(ConflictKind::Membership))), "{dup:?}");
        assert!(store.consume_token(TokenKind::Invitation, &hash, Utc::now()).await.is_ok());

        // Signing up through an invitation: verified user and membership at once.
        let hash = fresh_hash();
        let invite = NewToken::invitation(
            org,
            sender,
            "new@example.com",
            Role::Member,
            hash.clone(),
            in_hours(1),
        );
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

async fn profile_password_and_verification_updates(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
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
        assert!(
            store.create_session(&unknown, in_hours(1), SessionGrant::Password("h")).await.is_err()
        );
    })
    .await;
}

async fn data_survives_closing_and_reopening(kind: Kind) {
    bounded(async {
        let mut fx = Fixture::new(kind).await;
        let signup = fx
            .store
            .create_user_with_org(new_user("ada@example.com"), "Analytical".into())
            .await
            .expect("sign up");
        let session = fx
            .store
            .create_session(
                &signup.user.id,
                in_hours(1),
                SessionGrant::Password(&signup.user.password_hash),
            )
            .await
            .expect("session");
        fx.reopen().await;
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

// ---- Platform: connections, schemas and the history of questions ----

fn new_connection(org: &OrgId, name: &str) -> NewConnection {
    NewConnection {
        org_id: org.clone(),
        name: name.to_owned(),
        dialect: custard_core::Dialect::Postgres,
        key_hash: fresh_hash(),
        key_prefix: "custard_AbCd".to_owned(),
    }
}

/// A successful question about `connection`, answered with `SELECT 1`.
fn new_query(
    connection: &Connection,
    user: &UserId,
    conversation: &ConversationId,
    question: &str,
) -> NewQueryRecord {
    NewQueryRecord {
        org_id: connection.org_id.clone(),
        connection_id: connection.id.clone(),
        user_id: user.clone(),
        conversation_id: conversation.clone(),
        question: question.to_owned(),
        sql: Some("SELECT 1".to_owned()),
        outcome: "ok".to_owned(),
        error_message: None,
        answer: Some("1".to_owned()),
        row_count: Some(1),
        truncated: false,
        engine: "offline".to_owned(),
        attempts: 1,
        timings_json: r#"{"total_ms":3}"#.to_owned(),
        result_json: Some(r#"{"columns":["?column?"],"rows":[[1]]}"#.to_owned()),
        source: QuerySource::Api,
    }
}

fn conversation_id(name: &str) -> ConversationId {
    ConversationId::from(name.to_owned())
}

/// An organisation with its owner and one connection.
struct Tenant {
    org: OrgId,
    user: UserId,
    connection: Connection,
}

async fn tenant(store: &dyn Store, email: &str) -> Tenant {
    let signup = store.create_user_with_org(new_user(email), "Org".into()).await.expect("sign up");
    let org = signup.organization.id;
    let connection =
        store.create_connection(new_connection(&org, "warehouse")).await.expect("connection");
    Tenant { org, user: signup.user.id, connection }
}

/// A recorded question, or a history entry that holds one.
trait Recorded {
    fn recorded(&self) -> &QueryRecord;
}

impl Recorded for QueryRecord {
    fn recorded(&self) -> &QueryRecord {
        self
    }
}

impl Recorded for HistoryEntry {
    fn recorded(&self) -> &QueryRecord {
        &self.query
    }
}

fn questions<R: Recorded>(records: &[R]) -> Vec<&str> {
    records.iter().map(|r| r.recorded().record.question.as_str()).collect()
}

fn page(connection_id: Option<&ConnectionId>, limit: u32, offset: u32) -> QueryFilter {
    QueryFilter { connection_id: connection_id.cloned(), ..QueryFilter::page(limit, offset) }
}

async fn connections_are_created_listed_updated_and_deleted(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let Tenant { org, connection: first, .. } = tenant(store, "ada@example.com").await;
        assert_eq!(
            (first.name.as_str(), first.dialect),
            ("warehouse", custard_core::Dialect::Postgres)
        );
        assert_eq!(first.key_prefix, "custard_AbCd");
        assert_eq!(first.instructions, "");
        assert_eq!((&first.schema_fingerprint, first.agent_version.as_ref()), (&None, None));
        assert_eq!(first.created_at, first.updated_at);

        let mut second = new_connection(&org, "crm");
        second.dialect = custard_core::Dialect::Sqlite;
        let second = store.create_connection(second).await.expect("second");
        assert_eq!(second.dialect, custard_core::Dialect::Sqlite);
        let listed = store.list_connections(&org).await.expect("list");
        assert_eq!(listed, [first.clone(), second.clone()], "oldest first");
        assert_eq!(store.get_connection(&org, &second.id).await.expect("get"), second);

        // (update, expected name, expected instructions)
        let steps = [
            (ConnectionUpdate::default(), "warehouse", ""),
            (ConnectionUpdate { name: Some("dwh".into()), instructions: None }, "dwh", ""),
            (
                ConnectionUpdate {
                    name: None,
                    instructions: Some("fiscal year starts in April".into()),
                },
                "dwh",
                "fiscal year starts in April",
            ),
            (
                ConnectionUpdate {
                    name: Some("warehouse".into()),
                    instructions: Some(String::new()),
                },
                "warehouse",
                "",
            ),
        ];
        let mut before = first.clone();
        for (i, (update, name, instructions)) in steps.into_iter().enumerate() {
            let nothing = update == ConnectionUpdate::default();
            let got = store.update_connection(&org, &first.id, update).await.expect("update");
            assert_eq!(
                (got.name.as_str(), got.instructions.as_str()),
                (name, instructions),
                "step {i}"
            );
            if nothing {
                assert_eq!(got, before, "step {i}: an empty update changes nothing");
            }
            assert!(got.updated_at >= before.updated_at, "step {i}");
            assert_eq!(store.get_connection(&org, &first.id).await.expect("get"), got, "step {i}");
            before = got;
        }

        store.delete_connection(&org, &first.id).await.expect("delete");
        let gone = store.get_connection(&org, &first.id).await;
        assert!(matches!(gone, Err(StoreError::NotFound)), "{gone:?}");
        let again = store.delete_connection(&org, &first.id).await;
        assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
        let update = store.update_connection(&org, &first.id, ConnectionUpdate::default()).await;
        assert!(matches!(update, Err(StoreError::NotFound)), "{update:?}");
        assert_eq!(store.list_connections(&org).await.expect("list"), [second]);
    })
    .await;
}

async fn a_rotated_key_stops_matching_at_once(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let Tenant { org, .. } = tenant(store, "ada@example.com").await;
        let new = new_connection(&org, "db");
        let old_hash = new.key_hash.clone();
        let connection = store.create_connection(new).await.expect("create");
        let found = store.connection_by_key_hash(&old_hash).await.expect("by key");
        assert_eq!(found, connection);

        let new_hash = fresh_hash();
        let rotated = store
            .set_connection_key(&org, &connection.id, new_hash.clone(), "custard_XyZw".into())
            .await
            .expect("rotate");
        assert_eq!(rotated.key_prefix, "custard_XyZw");
        let old = store.connection_by_key_hash(&old_hash).await;
        assert!(matches!(old, Err(StoreError::NotFound)), "{old:?}");
        assert_eq!(store.connection_by_key_hash(&new_hash).await.expect("new key"), rotated);
        let unknown = store.connection_by_key_hash(&fresh_hash()).await;
        assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");

        // Key hashes are unique across connections and organisations.
        let other = tenant(store, "bob@example.com").await;
        let mut clash = new_connection(&other.org, "clash");
        clash.key_hash = new_hash.clone();
        let created = store.create_connection(clash).await;
        assert!(matches!(created, Err(StoreError::Conflict(ConflictKind::ApiKey))), "{created:?}");
        let moved = store
            .set_connection_key(&other.org, &other.connection.id, new_hash.clone(), "x".into())
            .await;
        assert!(matches!(moved, Err(StoreError::Conflict(ConflictKind::ApiKey))), "{moved:?}");
        assert_eq!(
            store.connection_by_key_hash(&new_hash).await.expect("still ours").id,
            connection.id
        );
        let theirs = store.get_connection(&other.org, &other.connection.id).await.expect("theirs");
        assert_eq!(theirs, other.connection, "a refused rotation changes nothing");
    })
    .await;
}

async fn schemas_are_saved_replaced_and_shown_on_the_connection(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let Tenant { org, connection, .. } = tenant(store, "ada@example.com").await;
        let id = &connection.id;
        let none = store.get_schema(&org, id).await;
        assert!(matches!(none, Err(StoreError::NotFound)), "{none:?}");

        let mut last: Option<StoredSchema> = None;
        for (fingerprint, json) in [("fp1", r#"{"tables":[]}"#), ("fp2", r#"{"tables":[1]}"#)] {
            let saved =
                store.save_schema(&org, id, fingerprint.into(), json.into()).await.expect("save");
            assert_eq!((saved.fingerprint.as_str(), saved.json.as_str()), (fingerprint, json));
            if let Some(last) = &last {
                assert!(saved.refreshed_at >= last.refreshed_at);
            }
            assert_eq!(store.get_schema(&org, id).await.expect("get"), saved);
            let shown = store.get_connection(&org, id).await.expect("connection");
            assert_eq!(shown.schema_fingerprint.as_deref(), Some(fingerprint));
            assert_eq!(shown.schema_refreshed_at, Some(saved.refreshed_at));
            assert_eq!(shown.updated_at, connection.updated_at, "a schema is not a setting");
            last = Some(saved);
        }
        let rows = fx.scalar("SELECT count(*) FROM connection_schemas").await;
        assert_eq!(rows, 1, "saving again replaces");

        store.record_agent_seen(&org, id, "0.3.1".into()).await.expect("seen");
        let seen = store.get_connection(&org, id).await.expect("connection");
        assert_eq!(seen.agent_version.as_deref(), Some("0.3.1"));
        assert!(seen.last_seen_at.is_some_and(|at| at >= connection.created_at));
        let listed = store.list_connections(&org).await.expect("list");
        assert_eq!(listed, [seen], "the list shows the same fields");
    })
    .await;
}

async fn history_pages_newest_first_and_filters_by_connection(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let Tenant { org, user, connection: first } = tenant(store, "ada@example.com").await;
        let second = store.create_connection(new_connection(&org, "crm")).await.expect("second");
        let conv = conversation_id("c1");
        // q0..q7 alternate over the two connections; many share a millisecond.
        let mut recorded = Vec::new();
        for i in 0..8 {
            let connection = if i % 3 == 0 { &second } else { &first };
            let mut query = new_query(connection, &user, &conv, &format!("q{i}"));
            query.source = [QuerySource::Web, QuerySource::Api, QuerySource::Mcp][i % 3];
            if i == 5 {
                // The optional fields round-trip empty as well as full.
                query.sql = None;
                query.outcome = "sql_rejected".into();
                query.error_message = Some("only SELECT".into());
                query.answer = None;
                query.row_count = None;
                query.result_json = None;
                query.truncated = true;
                query.attempts = 3;
            }
            let got = store.record_query(query.clone()).await.expect("record");
            assert_eq!((&got.record, got.feedback), (&query, None));
            assert_eq!(store.get_query(&org, &got.id).await.expect("get"), got);
            recorded.push(got);
        }
        let all = store.list_queries(&org, page(None, 50, 0)).await.expect("all");
        assert_eq!(questions(&all), ["q7", "q6", "q5", "q4", "q3", "q2", "q1", "q0"]);
        let newest_first: Vec<_> = recorded.iter().rev().cloned().collect();
        let listed: Vec<QueryRecord> = all.iter().map(|e| e.query.clone()).collect();
        assert_eq!(listed, newest_first);

        // (connection, limit, offset, expected)
        let cases: [(Option<&ConnectionId>, u32, u32, &[&str]); 7] = [
            (None, 3, 0, &["q7", "q6", "q5"]),
            (None, 3, 3, &["q4", "q3", "q2"]),
            (None, 3, 6, &["q1", "q0"]),
            (None, 3, 9, &[]),
            (None, 0, 0, &[]),
            (Some(&second.id), 10, 0, &["q6", "q3", "q0"]),
            (Some(&first.id), 2, 1, &["q5", "q4"]),
        ];
        for (connection, limit, offset, expected) in cases {
            let got =
                store.list_queries(&org, page(connection, limit, offset)).await.expect("page");
            assert_eq!(questions(&got), expected, "{connection:?} limit {limit} offset {offset}");
        }
        let unknown = ConnectionId::from("nope".to_owned());
        let filtered = store.list_queries(&org, page(Some(&unknown), 10, 0)).await;
        assert!(matches!(filtered, Err(StoreError::NotFound)), "{filtered:?}");
        let missing = store.get_query(&org, &QueryId::from("nope".to_owned())).await;
        assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    })
    .await;
}

/// Questions that finish together are recorded together (the SQLite store
/// commits them in one transaction); each caller gets its own row, a
/// question about a connection deleted meanwhile fails alone, and every
/// recorded question is there after the store is closed and opened again.
async fn questions_recorded_at_once_each_get_their_own_result(kind: Kind) {
    bounded(async {
        let mut fx = Fixture::new(kind).await;
        let store = Arc::clone(&fx.store);
        let Tenant { org, user, connection } = tenant(store.as_ref(), "ada@example.com").await;
        let doomed = store.create_connection(new_connection(&org, "doomed")).await.expect("new");
        store.delete_connection(&org, &doomed.id).await.expect("delete");
        let conv = conversation_id("c1");
        let asks = (0..40).map(|i| {
            let target = if i % 10 == 7 { &doomed } else { &connection };
            let query = new_query(target, &user, &conv, &format!("q{i}"));
            let store = Arc::clone(&store);
            tokio::spawn(async move { (query.clone(), store.record_query(query).await) })
        });
        let mut ids = std::collections::HashSet::new();
        for ask in asks.collect::<Vec<_>>() {
            let (query, result) = ask.await.expect("task");
            if query.connection_id == doomed.id {
                assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
            } else {
                let got = result.expect("recorded");
                assert_eq!(got.record, query, "each caller gets its own question back");
                assert!(ids.insert(got.id), "ids are unique");
            }
        }
        assert_eq!(ids.len(), 36);
        drop(store);
        fx.reopen().await;
        let listed = fx.store.list_queries(&org, page(None, 100, 0)).await.expect("list");
        let listed: std::collections::HashSet<_> = listed.into_iter().map(|e| e.query.id).collect();
        assert_eq!(listed, ids, "every question answered as recorded was recorded");
    })
    .await;
}

async fn a_page_of_history_is_at_most_two_hundred(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let Tenant { org, user, connection } = tenant(store, "ada@example.com").await;
        let conv = conversation_id("long");
        for i in 0..205 {
            store
                .record_query(new_query(&connection, &user, &conv, &format!("q{i}")))
                .await
                .expect("record");
        }
        let got = store.list_queries(&org, page(None, u32::MAX, 0)).await.expect("page");
        assert_eq!(got.len(), 200);
        assert_eq!(got[0].query.record.question, "q204");
        let turns = store.conversation(&org, &conv, u32::MAX).await.expect("conversation");
        assert_eq!((turns.len(), turns[199].record.question.as_str()), (200, "q204"));
    })
    .await;
}

/// The history's filters: by person, outcome and text (`%`, `_` and `\`
/// literal, ASCII case ignored), alone and together, each entry with who asked.
async fn history_filters_by_person_outcome_and_search_and_names_the_asker(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let Tenant { org, user: owner, connection } = tenant(store, "ada@example.com").await;
        let mo = join(store, &org, "mo@example.com", Role::Member).await;
        store
            .update_profile(
                &mo.id,
                ProfileUpdate { first_name: String::new(), last_name: String::new() },
            )
            .await
            .expect("no names");
        let conv = conversation_id("c");
        // (asker is Mo, question, answered), oldest first.
        let history = [
            (false, "Revenue by month", true),
            (true, "revenue_total", true),
            (false, "100% of orders", false),
            (true, "refunds under 5%", true),
            (false, "path C:\\temp", true),
            (true, "REVENUE in April", false),
            (false, "revenueXtotal", true),
        ];
        for (by_mo, question, answered) in history {
            let asker = if by_mo { &mo.id } else { &owner };
            let mut query = new_query(&connection, asker, &conv, question);
            if !answered {
                query.outcome = "no_valid_query".to_owned();
                query.error_message = Some("could not write valid SQL".to_owned());
            }
            store.record_query(query).await.expect("record");
        }
        let filter = |asked_by: Option<&UserId>, outcome, search: Option<&str>| QueryFilter {
            asked_by: asked_by.cloned(),
            outcome,
            search: search.map(str::to_owned),
            ..QueryFilter::page(50, 0)
        };
        use OutcomeFilter::{Answered, Failed};
        let everything = history.iter().rev().map(|h| h.1).collect::<Vec<_>>();
        let answered = history.iter().rev().filter(|h| h.2).map(|h| h.1).collect::<Vec<_>>();
        let revenue = ["revenueXtotal", "REVENUE in April", "revenue_total", "Revenue by month"];
        /// (person, outcome, search, expected newest first)
        type Case<'a> = (Option<&'a UserId>, Option<OutcomeFilter>, Option<&'a str>, &'a [&'a str]);
        let cases: [Case<'_>; 14] = [
            (None, None, None, &everything),
            (Some(&mo.id), None, None, &["REVENUE in April", "refunds under 5%", "revenue_total"]),
            (Some(&owner), Some(Failed), None, &["100% of orders"]),
            (None, Some(Answered), None, &answered),
            (None, Some(Failed), None, &["REVENUE in April", "100% of orders"]),
            (None, None, Some("revenue"), &revenue),
            (None, None, Some("rEvEnUe iN"), &["REVENUE in April"]),
            // `_` is a character, not "any one character".
            (None, None, Some("revenue_"), &["revenue_total"]),
            // `%` is a character, not "anything".
            (None, None, Some("%"), &["refunds under 5%", "100% of orders"]),
            (None, None, Some("0% of"), &["100% of orders"]),
            (None, None, Some("revenue%total"), &[]),
            (None, None, Some("C:\\t"), &["path C:\\temp"]),
            (Some(&mo.id), Some(Answered), Some("REV"), &["revenue_total"]),
            (Some(&UserId::from("nobody".to_owned())), None, None, &[]),
        ];
        for (person, outcome, search, expected) in cases {
            let got = store.list_queries(&org, filter(person, outcome, search)).await;
            let got = got.expect("page");
            assert_eq!(questions(&got), expected, "{person:?} {outcome:?} {search:?}");
        }
        // Paging applies after filtering.
        let second = QueryFilter { offset: 1, limit: 1, ..filter(None, None, Some("revenue")) };
        let got = store.list_queries(&org, second).await.expect("page");
        assert_eq!(questions(&got), ["REVENUE in April"]);

        // Each entry names its asker, and says whether they are still a member.
        let all = store.list_queries(&org, QueryFilter::page(50, 0)).await.expect("all");
        let asker = |question: &str| {
            let entry = all.iter().find(|e| e.query.record.question == question).expect(question);
            entry.asked_by.clone().expect("an asker")
        };
        let ada = asker("Revenue by month");
        assert_eq!(
            (ada.email.as_str(), ada.display_name().as_str()),
            ("ada@example.com", "Ada Lovelace")
        );
        assert!(ada.member);
        let unnamed = asker("revenue_total");
        assert_eq!(unnamed.display_name(), "mo@example.com", "the email without a name");
        store.remove_member(&org, &mo.id).await.expect("remove Mo");
        let all = store.list_queries(&org, filter(Some(&mo.id), None, None)).await.expect("all");
        assert_eq!(all.len(), 3, "a former member's questions stay");
        for entry in &all {
            let asker = entry.asked_by.as_ref().expect("the user still exists");
            assert_eq!((asker.email.as_str(), asker.member), ("mo@example.com", false));
        }
    })
    .await;
}

/// The asker may delete a question, an owner or admin any of the
/// organisation's; anyone else is refused and nothing changes. Another
/// organisation can neither see nor delete it.
async fn deleting_a_question_needs_its_asker_or_an_owner_or_admin(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let Tenant { org, user: owner, connection } = tenant(store, "ada@example.com").await;
        let admin = join(store, &org, "admin@example.com", Role::Admin).await.id;
        let mo = join(store, &org, "mo@example.com", Role::Member).await.id;
        let eve = join(store, &org, "eve@example.com", Role::Member).await.id;
        let other = tenant(store, "other@example.com").await;
        let conv = conversation_id("c");
        let ask = |by: &UserId, question: &str| {
            store.record_query(new_query(&connection, by, &conv, question))
        };
        let by_mo = ask(&mo, "mine").await.expect("record").id;
        let by_owner = ask(&owner, "owner's").await.expect("record").id;
        let by_mo_2 = ask(&mo, "mine too").await.expect("record").id;
        let by_eve = ask(&eve, "eve's").await.expect("record").id;

        // (who, question, expected)
        use QueryDeletion::{Deleted, NotAllowed};
        let cases: [(&UserId, &QueryId, Result<QueryDeletion, ()>); 8] = [
            (&eve, &by_mo, Ok(NotAllowed)),
            (&mo, &by_owner, Ok(NotAllowed)),
            // Another organisation's user, even with the id: as if there were none.
            (&other.user, &by_mo, Err(())),
            (&mo, &by_mo, Ok(Deleted)),
            (&mo, &by_mo, Err(())),
            (&admin, &by_mo_2, Ok(Deleted)),
            (&owner, &by_eve, Ok(Deleted)),
            (&owner, &QueryId::from("nope".to_owned()), Err(())),
        ];
        for (i, (by, id, expected)) in cases.into_iter().enumerate() {
            let got = store.delete_query(&org, id, by).await;
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(got, expected, "case {i}"),
                (Err(StoreError::NotFound), Err(())) => {}
                (got, _) => panic!("case {i}: {got:?}, expected {expected:?}"),
            }
        }
        let left = store.list_queries(&org, QueryFilter::page(10, 0)).await.expect("history");
        assert_eq!(questions(&left), ["owner's"]);
        for gone in [&by_mo, &by_mo_2, &by_eve] {
            let got = store.get_query(&org, gone).await;
            assert!(matches!(got, Err(StoreError::NotFound)), "{got:?}");
        }
        // The other organisation's owner, asking in their own organisation's name.
        let got = store.delete_query(&other.org, &by_owner, &other.user).await;
        assert!(matches!(got, Err(StoreError::NotFound)), "{got:?}");
        let theirs = store.list_queries(&other.org, QueryFilter::page(10, 0)).await;
        assert!(theirs.expect("their history").is_empty());
        // A former member may delete nothing any more, not even their own.
        let kept = ask(&eve, "eve's second").await.expect("record").id;
        store.remove_member(&org, &eve).await.expect("remove Eve");
        let got = store.delete_query(&org, &kept, &eve).await;
        assert!(matches!(got, Err(StoreError::NotFound)), "{got:?}");
        assert!(store.get_query(&org, &kept).await.is_ok());
    })
    .await;
}

async fn a_conversation_returns_its_newest_turns_oldest_first(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let Tenant { org, user, connection } = tenant(store, "ada@example.com").await;
        let (talk, other) = (conversation_id("talk"), conversation_id("other"));
        for (conv, question) in
            [(&talk, "t1"), (&other, "o1"), (&talk, "t2"), (&talk, "t3"), (&talk, "t4")]
        {
            store
                .record_query(new_query(&connection, &user, conv, question))
                .await
                .expect("record");
        }
        // (conversation, limit, expected)
        let cases: [(&ConversationId, u32, &[&str]); 5] = [
            (&talk, 10, &["t1", "t2", "t3", "t4"]),
            (&talk, 2, &["t3", "t4"]),
            (&talk, 0, &[]),
            (&other, 10, &["o1"]),
            (&conversation_id("none"), 10, &[]),
        ];
        for (conv, limit, expected) in cases {
            let got = store.conversation(&org, conv, limit).await.expect("conversation");
            assert_eq!(questions(&got), expected, "{conv} limit {limit}");
        }
    })
    .await;
}

async fn approved_examples_are_correct_answers_newest_first_once_per_question(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let Tenant { org, user, connection } = tenant(store, "ada@example.com").await;
        let elsewhere = store.create_connection(new_connection(&org, "crm")).await.expect("second");
        let conv = conversation_id("c");
        // (on the other connection, question, sql, outcome, feedback), oldest first.
        let history = [
            (false, "how many users", Some("SELECT 1"), "ok", Some(true)),
            (false, "revenue", Some("SELECT 2"), "ok", Some(true)),
            (false, "churn", Some("SELECT 3"), "ok", Some(false)),
            (false, "unrated", Some("SELECT 4"), "ok", None),
            (false, "no sql", None, "ok", Some(true)),
            (false, "failed", Some("SELECT 5"), "execution_failed", Some(true)),
            (true, "elsewhere", Some("SELECT 6"), "ok", Some(true)),
            (false, "how many users", Some("SELECT 7"), "ok", Some(true)),
            (false, "signups", Some("SELECT 8"), "ok", Some(true)),
        ];
        for (on_other, question, sql, outcome, feedback) in history {
            let target = if on_other { &elsewhere } else { &connection };
            let mut query = new_query(target, &user, &conv, question);
            query.sql = sql.map(str::to_owned);
            query.outcome = outcome.to_owned();
            let recorded = store.record_query(query).await.expect("record");
            if let Some(correct) = feedback {
                let marked =
                    store.set_feedback(&org, &recorded.id, correct).await.expect("feedback");
                assert_eq!(marked.feedback, Some(correct));
                assert_eq!(marked.record, recorded.record);
                assert_eq!(store.get_query(&org, &recorded.id).await.expect("get"), marked);
            }
        }
        let pairs = |examples: Vec<ApprovedExample>| -> Vec<(String, String)> {
            examples.into_iter().map(|e| (e.question, e.sql)).collect()
        };
        let all = pairs(store.approved_examples(&org, &connection.id, 10).await.expect("examples"));
        let expected =
            [("signups", "SELECT 8"), ("how many users", "SELECT 7"), ("revenue", "SELECT 2")];
        let expected: Vec<_> =
            expected.iter().map(|(q, s)| (q.to_string(), s.to_string())).collect();
        assert_eq!(all, expected);
        let two = pairs(store.approved_examples(&org, &connection.id, 2).await.expect("examples"));
        assert_eq!(two, expected[..2]);
        assert!(store.approved_examples(&org, &connection.id, 0).await.expect("none").is_empty());
        let other = pairs(store.approved_examples(&org, &elsewhere.id, 10).await.expect("other"));
        assert_eq!(other, [("elsewhere".to_owned(), "SELECT 6".to_owned())]);

        // Changing one's mind withdraws the example.
        let signups =
            store.list_queries(&org, page(Some(&connection.id), 1, 0)).await.expect("page");
        store.set_feedback(&org, &signups[0].query.id, false).await.expect("unmark");
        let after =
            pairs(store.approved_examples(&org, &connection.id, 10).await.expect("examples"));
        assert_eq!(after, expected[1..]);

        // SQL a caller wrote (MCP's `run_sql`, engine `sql`) is recorded with
        // the SQL as its question: marked correct, it is still no example.
        let mut written = new_query(&connection, &user, &conv, "SELECT 9 FROM t");
        written.sql = Some("SELECT 9 FROM t".to_owned());
        written.engine = "sql".to_owned();
        let written = store.record_query(written).await.expect("record");
        store.set_feedback(&org, &written.id, true).await.expect("feedback");
        let still =
            pairs(store.approved_examples(&org, &connection.id, 10).await.expect("examples"));
        assert_eq!(still, expected[1..]);
    })
    .await;
}

async fn deleting_a_connection_deletes_its_schema_and_history(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let Tenant { org, user, connection } = tenant(store, "ada@example.com").await;
        let kept = store.create_connection(new_connection(&org, "kept")).await.expect("kept");
        let conv = conversation_id("c");
        for target in [&connection, &kept] {
            store.save_schema(&org, &target.id, "fp".into(), "{}".into()).await.expect("schema");
            store
                .record_query(new_query(target, &user, &conv, &target.name))
                .await
                .expect("record");
        }
        let doomed =
            store.list_queries(&org, page(Some(&connection.id), 10, 0)).await.expect("page");
        store.delete_connection(&org, &connection.id).await.expect("delete");

        let query = store.get_query(&org, &doomed[0].query.id).await;
        assert!(matches!(query, Err(StoreError::NotFound)), "{query:?}");
        let history = store.list_queries(&org, page(None, 10, 0)).await.expect("history");
        assert_eq!(questions(&history), ["kept"]);
        let turns = store.conversation(&org, &conv, 10).await.expect("conversation");
        assert_eq!(questions(&turns), ["kept"]);
        let counts = (
            fx.scalar("SELECT count(*) FROM connection_schemas").await,
            fx.scalar("SELECT count(*) FROM queries").await,
        );
        assert_eq!(counts, (1, 1), "only the kept connection's rows remain");
        assert!(store.get_schema(&org, &kept.id).await.is_ok());
    })
    .await;
}

async fn platform_calls_never_reach_another_organisation(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let a = tenant(store, "a@example.com").await;
        let b = tenant(store, "b@example.com").await;
        let conv = conversation_id("a-talk");
        store
            .save_schema(&a.org, &a.connection.id, "fp".into(), "{}".into())
            .await
            .expect("schema");
        let query =
            store.record_query(new_query(&a.connection, &a.user, &conv, "q")).await.expect("q");
        let mut approved = new_query(&a.connection, &a.user, &conv, "approved");
        approved.conversation_id = conversation_id("a-other");
        let approved = store.record_query(approved).await.expect("approved");
        store.set_feedback(&a.org, &approved.id, true).await.expect("feedback");
        let before = store.get_connection(&a.org, &a.connection.id).await.expect("a's connection");

        let (org_b, conn_a, query_a) = (&b.org, &a.connection.id, &query.id);
        let mut foreign = new_query(&a.connection, &b.user, &conv, "sneaky");
        foreign.org_id = b.org.clone();
        type Probe<'a> = BoxFuture<'a, Result<(), StoreError>>;
        // Every organisation-scoped platform call, from B with A's ids.
        let probes: Vec<(&str, Probe<'_>)> = vec![
            (
                "get_connection",
                Box::pin(async { store.get_connection(org_b, conn_a).await.map(drop) }),
            ),
            (
                "update_connection",
                Box::pin(async {
                    let update = ConnectionUpdate { name: Some("mine".into()), instructions: None };
                    store.update_connection(org_b, conn_a, update).await.map(drop)
                }),
            ),
            (
                "update_connection (empty)",
                Box::pin(async {
                    store
                        .update_connection(org_b, conn_a, ConnectionUpdate::default())
                        .await
                        .map(drop)
                }),
            ),
            (
                "set_connection_key",
                Box::pin(async {
                    store
                        .set_connection_key(org_b, conn_a, fresh_hash(), "x".into())
                        .await
                        .map(drop)
                }),
            ),
            ("delete_connection", Box::pin(async { store.delete_connection(org_b, conn_a).await })),
            ("get_schema", Box::pin(async { store.get_schema(org_b, conn_a).await.map(drop) })),
            (
                "save_schema",
                Box::pin(async {
                    store.save_schema(org_b, conn_a, "evil".into(), "{}".into()).await.map(drop)
                }),
            ),
            (
                "record_agent_seen",
                Box::pin(async { store.record_agent_seen(org_b, conn_a, "9.9".into()).await }),
            ),
            ("record_query", Box::pin(async { store.record_query(foreign).await.map(drop) })),
            (
                "list_queries",
                Box::pin(async {
                    store.list_queries(org_b, page(Some(conn_a), 10, 0)).await.map(drop)
                }),
            ),
            ("get_query", Box::pin(async { store.get_query(org_b, query_a).await.map(drop) })),
            (
                "delete_query",
                Box::pin(async { store.delete_query(org_b, query_a, &b.user).await.map(drop) }),
            ),
            (
                "set_feedback",
                Box::pin(async { store.set_feedback(org_b, query_a, false).await.map(drop) }),
            ),
            (
                "approved_examples",
                Box::pin(async { store.approved_examples(org_b, conn_a, 10).await.map(drop) }),
            ),
        ];
        for (name, probe) in probes {
            let got = probe.await;
            assert!(matches!(got, Err(StoreError::NotFound)), "{name}: {got:?}");
        }
        // Lists of B show nothing of A's.
        assert_eq!(store.list_connections(org_b).await.expect("b's connections"), [b.connection]);
        assert!(
            store.list_queries(org_b, page(None, 10, 0)).await.expect("b's history").is_empty()
        );
        assert!(store.conversation(org_b, &conv, 10).await.expect("b's conversation").is_empty());

        // Nothing of A's changed.
        assert_eq!(store.get_connection(&a.org, conn_a).await.expect("a's connection"), before);
        assert_eq!(store.get_schema(&a.org, conn_a).await.expect("a's schema").fingerprint, "fp");
        assert_eq!(store.get_query(&a.org, query_a).await.expect("a's query"), query);
        let examples = store.approved_examples(&a.org, conn_a, 10).await.expect("a's examples");
        assert_eq!(examples.len(), 1);
        let history = store.list_queries(&a.org, page(None, 10, 0)).await.expect("a's history");
        assert_eq!(questions(&history), ["approved", "q"]);
    })
    .await;
}

async fn platform_data_survives_closing_and_reopening(kind: Kind) {
    bounded(async {
        let mut fx = Fixture::new(kind).await;
        let Tenant { org, user, connection } = tenant(fx.store.as_ref(), "ada@example.com").await;
        let store = Arc::clone(&fx.store);
        store.save_schema(&org, &connection.id, "fp".into(), "{}".into()).await.expect("schema");
        store.record_agent_seen(&org, &connection.id, "0.3.1".into()).await.expect("seen");
        let query = store
            .record_query(new_query(&connection, &user, &conversation_id("c"), "q"))
            .await
            .expect("record");
        let query = store.set_feedback(&org, &query.id, true).await.expect("feedback");
        let connection = store.get_connection(&org, &connection.id).await.expect("connection");
        drop(store);
        fx.reopen().await;
        let store = fx.store.as_ref();
        assert_eq!(
            store.get_connection(&org, &connection.id).await.expect("connection"),
            connection
        );
        assert_eq!(store.get_query(&org, &query.id).await.expect("query"), query);
        assert_eq!(store.get_schema(&org, &connection.id).await.expect("schema").fingerprint, "fp");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_accounts_era_gains_the_platform_tables() {
    bounded(async {
        let mut fx = Fixture::new(Kind::Sqlite).await;
        let signup = fx
            .store
            .create_user_with_org(new_user("ada@example.com"), "Analytical".into())
            .await
            .expect("sign up");
        // Roll the file back to what a binary with only the first migration
        // left (the tokens table as the first migration made it; it is empty).
        raw(&fx.path())
            .execute_batch(
                "DROP TABLE personal_tokens;
                 DROP TABLE queries; DROP TABLE connection_schemas; DROP TABLE connections;
                 DROP TABLE one_time_tokens; DROP TABLE server_secrets; DROP TABLE attempt_limits;
                 CREATE TABLE one_time_tokens (
                     id         TEXT PRIMARY KEY,
                     kind       TEXT NOT NULL
                                CHECK (kind IN ('email_verification', 'password_reset', 'invitation')),
                     token_hash TEXT NOT NULL UNIQUE,
                     user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
                     email      TEXT NOT NULL,
                     org_id     TEXT REFERENCES organizations (id) ON DELETE CASCADE,
                     role       TEXT CHECK (role IN ('owner', 'admin', 'member')),
                     created_at INTEGER NOT NULL,
                     expires_at INTEGER NOT NULL,
                     used_at    INTEGER,
                     CHECK (kind = 'invitation' OR user_id IS NOT NULL),
                     CHECK (kind <> 'invitation' OR (org_id IS NOT NULL AND role IS NOT NULL))
                 ) STRICT;
                 CREATE INDEX one_time_tokens_by_user ON one_time_tokens (user_id);
                 CREATE INDEX one_time_tokens_by_org ON one_time_tokens (org_id);
                 DELETE FROM schema_migrations WHERE version > 1;",
            )
            .expect("roll back");
        fx.reopen().await;
        let version: i64 = raw(&fx.path())
            .query_row("SELECT max(version) FROM schema_migrations", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, latest_version());
        let org = &signup.organization.id;
        assert_eq!(fx.store.get_user(&signup.user.id).await.expect("user"), signup.user);
        let connection =
            fx.store.create_connection(new_connection(org, "db")).await.expect("connection");
        assert_eq!(fx.store.list_connections(org).await.expect("list"), [connection]);
        // The later migrations' token columns are there too.
        let reset = fresh_hash();
        let token = NewToken::password_reset(&signup.user, reset.clone(), in_hours(1));
        assert_eq!(fx.store.create_token(token).await.expect("token").revoked_at, None);
        fx.store.reset_password(&reset, "h".into(), Utc::now()).await.expect("reset");
    })
    .await;
}

async fn connection_names_are_unique_per_organisation_trimmed_and_case_insensitive(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let a = tenant(store, "a@example.com").await;
        let b = tenant(store, "b@example.com").await;
        let taken = |r: &Result<Connection, StoreError>| {
            matches!(r, Err(StoreError::Conflict(ConflictKind::ConnectionName)))
        };
        // (name, taken in a's organisation?) after "warehouse" and "Šhop".
        store.create_connection(new_connection(&a.org, "Šhop")).await.expect("shop");
        let cases = [
            ("warehouse", true),
            ("WAREHOUSE", true),
            ("  Warehouse ", true),
            ("šHOP", true),
            ("warehouse 2", false),
        ];
        for (name, is_taken) in cases {
            let created = store.create_connection(new_connection(&a.org, name)).await;
            assert_eq!(taken(&created), is_taken, "{name}: {created:?}");
        }
        // Another organisation may use the name (b's tenant has a "warehouse" too).
        store.create_connection(new_connection(&b.org, "šhop")).await.expect("other org");

        // Renaming to another connection's name is refused; to its own, in
        // another case, is not.
        let rename = |name: &str| ConnectionUpdate { name: Some(name.into()), instructions: None };
        let id = &a.connection.id;
        assert!(taken(&store.update_connection(&a.org, id, rename("ŠHOP")).await));
        assert_eq!(store.get_connection(&a.org, id).await.expect("get").name, "warehouse");
        let renamed = store.update_connection(&a.org, id, rename("WareHouse")).await;
        assert_eq!(renamed.expect("own name").name, "WareHouse");
        let instructions = ConnectionUpdate { name: None, instructions: Some("x".into()) };
        store.update_connection(&a.org, id, instructions).await.expect("no name, no check");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_migration_renames_old_duplicates_deterministically() {
    bounded(async {
        let mut fx = Fixture::new(Kind::Sqlite).await;
        let a = tenant(fx.store.as_ref(), "a@example.com").await;
        let b = tenant(fx.store.as_ref(), "b@example.com").await;
        let mut ids = vec![a.connection.id.clone()];
        for name in ["db", "x1", "db (2)", "x2"] {
            let c = fx.store.create_connection(new_connection(&a.org, name)).await.expect(name);
            ids.push(c.id);
        }
        let other = fx.store.create_connection(new_connection(&b.org, "db")).await.expect("b");
        // Back to a database before the migration, with duplicate names.
        let conn = raw(&fx.path());
        conn.execute_batch(
            "DROP INDEX connections_name_per_org;
             DELETE FROM schema_migrations WHERE version = 4;",
        )
        .expect("roll back");
        conn.execute_batch(
            "UPDATE connections SET name = 'Db' WHERE name = 'x1';
             UPDATE connections SET name = 'DB ' WHERE name = 'x2';",
        )
        .expect("duplicates");
        drop(conn);
        fx.reopen().await;

        let names: Vec<(ConnectionId, String)> = fx
            .store
            .list_connections(&a.org)
            .await
            .expect("list")
            .into_iter()
            .map(|c| (c.id, c.name))
            .collect();
        let expect = [
            (ids[0].clone(), "warehouse".to_owned()),
            // The oldest keeps the name; later ones get their rank.
            (ids[1].clone(), "db".to_owned()),
            (ids[2].clone(), format!("Db (2) ({})", ids[2].as_str())),
            // A name that was there first is kept; the renamed one gives way
            // and gets its id appended too.
            (ids[3].clone(), "db (2)".to_owned()),
            (ids[4].clone(), "DB  (3)".to_owned()),
        ];
        assert_eq!(names, expect);
        assert_eq!(fx.store.get_connection(&b.org, &other.id).await.expect("b").name, "db");
        // The index holds now.
        let again = fx.store.create_connection(new_connection(&a.org, "DB (2)")).await;
        assert!(matches!(again, Err(StoreError::Conflict(ConflictKind::ConnectionName))));
    })
    .await;
}

async fn session_context_reads_session_user_and_membership_together(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = store.create_user_with_org(new_user("ada@example.com"), "Ada's".into()).await;
        let ada = ada.expect("ada");
        let bob = store.create_user_with_org(new_user("bob@example.com"), "Bob's".into()).await;
        let bob = bob.expect("bob");
        let session = store
            .create_session(
                &ada.user.id,
                in_hours(1),
                SessionGrant::Password(&ada.user.password_hash),
            )
            .await
            .expect("session");

        let (s, user, membership) =
            store.session_context(&session.id, &ada.organization.id).await.expect("context");
        assert_eq!((s.id, user.id.clone()), (session.id.clone(), ada.user.id.clone()));
        assert_eq!(
            (membership.org_id, membership.user_id),
            (ada.organization.id.clone(), ada.user.id)
        );

        // Another organisation, or an unknown session, is NotFound.
        let other = store.session_context(&session.id, &bob.organization.id).await;
        assert!(matches!(other, Err(StoreError::NotFound)), "{other:?}");
        let unknown = SessionId::from("nope".to_owned());
        let unknown = store.session_context(&unknown, &ada.organization.id).await;
        assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");

        // A revoked session still reads (the caller decides), marked revoked.
        store.revoke_session(&session.id).await.expect("revoke");
        let (s, _, _) =
            store.session_context(&session.id, &ada.organization.id).await.expect("context");
        assert!(!s.is_active(Utc::now()));
    })
    .await;
}

async fn cancelled_reads_give_their_connection_back(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.clone();
        let ada = store.create_user(new_user("ada@example.com")).await.expect("ada");
        // Drop many reads at once mid-flight (a client that went away).
        for _ in 0..64 {
            let read = store.get_user(&ada.id);
            let _ = tokio::time::timeout(Duration::ZERO, read).await;
        }
        let aborted: Vec<_> = (0..16)
            .map(|_| {
                let (store, id) = (store.clone(), ada.id.clone());
                tokio::spawn(async move { store.get_user(&id).await })
            })
            .collect();
        for task in &aborted {
            task.abort();
        }
        // Every reader is still there: more reads at once than the pool holds all succeed.
        let reads: Vec<_> = (0..32)
            .map(|_| {
                let (store, id) = (store.clone(), ada.id.clone());
                tokio::spawn(async move { store.get_user(&id).await })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.expect("task").expect("read").id, ada.id);
        }
        // And a read after a write sees it.
        let session = store
            .create_session(&ada.id, in_hours(1), SessionGrant::Password(&ada.password_hash))
            .await
            .expect("write");
        assert_eq!(store.get_session(&session.id).await.expect("read").id, session.id);
    })
    .await;
}

/// Using one reset link, or changing the password, ends every other reset
/// link of the account (and only that account's); looking a link up does not
/// use it.
async fn a_used_reset_link_or_a_new_password_ends_every_other_reset_link(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = store.create_user(new_user("ada@example.com")).await.expect("ada");
        let bob = store.create_user(new_user("bob@example.com")).await.expect("bob");
        let issue = |user: &User| {
            let hash = fresh_hash();
            let token = NewToken::password_reset(user, hash.clone(), in_hours(1));
            async move {
                store.create_token(token).await.expect("token");
                hash
            }
        };
        // (how the account's password changes, whether Ada's other links still work after)
        enum Change {
            UseNewest,
            UseOldest,
            SetPassword,
        }
        for change in [Change::UseNewest, Change::UseOldest, Change::SetPassword] {
            let (older, newer, bobs) = (issue(&ada).await, issue(&ada).await, issue(&bob).await);
            let peeked = store.password_reset_user(&older, Utc::now()).await.expect("peek");
            assert_eq!(peeked.id, ada.id);
            assert_eq!(
                store.password_reset_user(&older, Utc::now()).await.expect("again").id,
                ada.id
            );
            let unused = match change {
                Change::UseNewest => {
                    store.reset_password(&newer, "h1".into(), Utc::now()).await.expect("newer");
                    vec![older]
                }
                Change::UseOldest => {
                    store.reset_password(&older, "h2".into(), Utc::now()).await.expect("older");
                    vec![newer]
                }
                Change::SetPassword => {
                    store.set_password_hash(&ada.id, "h3".into()).await.expect("set");
                    vec![older, newer]
                }
            };
            for hash in &unused {
                let peek = store.password_reset_user(hash, Utc::now()).await;
                assert!(matches!(peek, Err(StoreError::NotFound)), "{peek:?}");
                let reset = store.reset_password(hash, "late".into(), Utc::now()).await;
                assert!(matches!(reset, Err(StoreError::NotFound)), "{reset:?}");
            }
            assert_ne!(store.get_user(&ada.id).await.expect("ada").password_hash, "late");
            // Another account's link is untouched.
            assert_eq!(store.password_reset_user(&bobs, Utc::now()).await.expect("bob").id, bob.id);
        }
        let expired = fresh_hash();
        store
            .create_token(NewToken::password_reset(&ada, expired.clone(), in_hours(-1)))
            .await
            .expect("token");
        let peek = store.password_reset_user(&expired, Utc::now()).await;
        assert!(matches!(peek, Err(StoreError::NotFound)), "{peek:?}");
        let verification = fresh_hash();
        store
            .create_token(NewToken::email_verification(&ada, verification.clone(), in_hours(1)))
            .await
            .expect("token");
        let peek = store.password_reset_user(&verification, Utc::now()).await;
        assert!(matches!(peek, Err(StoreError::NotFound)), "another kind: {peek:?}");
    })
    .await;
}

/// Pending invitations are listed, read and revoked only within their
/// organisation; a revoked one cannot be accepted.
async fn invitations_are_listed_and_revoked_within_their_organisation(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let a = store.create_user_with_org(new_user("a@example.com"), "A".into()).await.expect("a");
        let b = store.create_user_with_org(new_user("b@example.com"), "B".into()).await.expect("b");
        let (a_org, b_org) = (&a.organization.id, &b.organization.id);
        let invite = |org: &OrgId, sender: &UserId, email: &str, expires: DateTime<Utc>| {
            let hash = fresh_hash();
            let token =
                NewToken::invitation(org, sender, email, Role::Member, hash.clone(), expires);
            async move { (store.create_token(token).await.expect("invitation"), hash) }
        };
        let (first, first_hash) = invite(a_org, &a.user.id, "one@example.com", in_hours(1)).await;
        let (second, _) = invite(a_org, &a.user.id, "two@example.com", in_hours(1)).await;
        invite(a_org, &a.user.id, "old@example.com", in_hours(-1)).await;
        let (b_one, _) = invite(b_org, &b.user.id, "three@example.com", in_hours(1)).await;
        let guest = store.create_user(new_user("one@example.com")).await.expect("guest");

        let listed = store.list_invitations(a_org, Utc::now()).await.expect("list");
        let emails: Vec<&str> = listed.iter().map(|i| i.email.as_str()).collect();
        assert_eq!(emails, ["one@example.com", "two@example.com"], "pending ones, oldest first");
        assert_eq!(listed[0].invited_by.as_ref(), Some(&a.user.id));
        assert_eq!(listed[0].invited_by_email.as_deref(), Some("a@example.com"));
        assert_eq!(listed[0].id, first.id);

        // Another organisation's invitation is not there, for reading or revoking.
        let got = store.get_invitation(a_org, &b_one.id, Utc::now()).await;
        assert!(matches!(got, Err(StoreError::NotFound)), "{got:?}");
        let revoked = store.revoke_invitation(a_org, &b_one.id, Utc::now()).await;
        assert!(matches!(revoked, Err(StoreError::NotFound)), "{revoked:?}");
        assert_eq!(store.list_invitations(b_org, Utc::now()).await.expect("B").len(), 1);

        store.revoke_invitation(a_org, &first.id, Utc::now()).await.expect("revoke");
        let again = store.revoke_invitation(a_org, &first.id, Utc::now()).await;
        assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");
        let accepted = store.accept_invitation(&first_hash, &guest.id, Utc::now()).await;
        assert!(matches!(accepted, Err(StoreError::NotFound)), "revoked: {accepted:?}");
        let listed = store.list_invitations(a_org, Utc::now()).await.expect("list");
        assert_eq!(listed.iter().map(|i| &i.id).collect::<Vec<_>>(), [&second.id]);
    })
    .await;
}

/// A member's pending invitations end when the member is removed, and those
/// the new role may not send end when the member is demoted; one that
/// outlived its sender's right is refused when accepted.
async fn invitations_end_with_their_senders_right_to_send_them(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let owner = store.create_user_with_org(new_user("o@example.com"), "O".into()).await;
        let owner = owner.expect("owner");
        let org = &owner.organization.id;
        let invite = |sender: &UserId, email: &str, role: Role| {
            let hash = fresh_hash();
            let token = NewToken::invitation(org, sender, email, role, hash.clone(), in_hours(1));
            async move {
                store.create_token(token).await.expect("invitation");
                hash
            }
        };
        let pending = || async {
            let listed = store.list_invitations(org, Utc::now()).await.expect("list");
            listed.into_iter().map(|i| i.email).collect::<Vec<_>>()
        };

        // Removed: every pending invitation of the admin ends; the owner's stay.
        let admin = join(store, org, "admin@example.com", Role::Admin).await;
        invite(&admin.id, "x1@example.com", Role::Admin).await;
        invite(&admin.id, "x2@example.com", Role::Member).await;
        invite(&owner.user.id, "y@example.com", Role::Member).await;
        store.remove_member(org, &admin.id).await.expect("remove");
        assert_eq!(pending().await, ["y@example.com"]);

        // Demoted: an owner turned admin keeps invitations to admin and member, not to owner;
        // turned member, none.
        let second = join(store, org, "second@example.com", Role::Owner).await;
        invite(&second.id, "z-owner@example.com", Role::Owner).await;
        invite(&second.id, "z-admin@example.com", Role::Admin).await;
        store.set_role(org, &second.id, Role::Admin).await.expect("to admin");
        assert_eq!(pending().await, ["y@example.com", "z-admin@example.com"]);
        store.set_role(org, &second.id, Role::Member).await.expect("to member");
        assert_eq!(pending().await, ["y@example.com"]);

        // Accepting checks the sender's right at that moment too (here the
        // sender's membership goes without the store's removal).
        let third = join(store, org, "third@example.com", Role::Admin).await;
        let hash = invite(&third.id, "late@example.com", Role::Member).await;
        // Ids are hex, safe to write into the statement.
        fx.exec(&format!("DELETE FROM memberships WHERE user_id = '{}'", third.id)).await;
        let late = store.create_user(new_user("late@example.com")).await.expect("late");
        let accepted = store.accept_invitation(&hash, &late.id, Utc::now()).await;
        assert!(matches!(accepted, Err(StoreError::NotFound)), "{accepted:?}");
        let signup = store
            .create_user_from_invitation(
                new_user("other@example.com"),
                &invite(&third.id, "other@example.com", Role::Member).await,
                Utc::now(),
            )
            .await;
        assert!(matches!(signup, Err(StoreError::NotFound)), "{signup:?}");
        assert!(matches!(
            store.get_user_by_email("other@example.com").await,
            Err(StoreError::NotFound)
        ));
    })
    .await;
}

/// Of servers asking for a shared secret at once, the first to store its
/// candidate wins and every one gets that value, then and after a restart.
async fn a_shared_secret_is_stored_once_and_the_same_for_all(kind: Kind) {
    bounded(async {
        let mut fx = Fixture::new(kind).await;
        let others = [fx.another().await, fx.another().await];
        let mut asking = Vec::new();
        for i in 0..12 {
            let store = if i % 3 == 0 { Arc::clone(&fx.store) } else { Arc::clone(&others[i % 2]) };
            asking.push(tokio::spawn(async move {
                store.shared_secret("jwt", format!("candidate {i}")).await
            }));
        }
        let mut got = Vec::new();
        for task in asking {
            got.push(task.await.expect("task").expect("secret"));
        }
        assert!(got.iter().all(|v| *v == got[0]), "{got:?}");
        assert!(got[0].starts_with("candidate "), "{got:?}");
        fx.reopen().await;
        let again = fx.store.shared_secret("jwt", "a later candidate".into()).await;
        assert_eq!(again.expect("secret"), got[0]);
        let other = fx.store.shared_secret("other", "its own".into()).await;
        assert_eq!(other.expect("secret"), "its own", "names are separate");
    })
    .await;
}

/// An attempt limit: `burst` at once, then one more every period, and what
/// was forgiven may be tried again; servers racing on one store admit no
/// more than the limit between them.
async fn attempts_are_limited_per_key_across_servers(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let every = Duration::from_secs(60);
        let now = Utc::now();
        for i in 0..3 {
            let taken = fx.store.take_attempt("login:ada", 3, every, now).await.expect("take");
            assert_eq!(taken, None, "attempt {i} is within the burst");
        }
        let over = fx.store.take_attempt("login:ada", 3, every, now).await.expect("take");
        let wait = over.expect("the fourth is over the limit");
        // A period, less the second allowed for clock readings taken at once.
        assert!(wait >= Duration::from_secs(59) && wait <= every, "{wait:?}");
        // Clock readings taken at once and counted out of order: one read
        // 5 ms later but counted first costs the burst nothing, and the
        // burst still has no attempt more.
        let skewed = now + TimeDelta::milliseconds(5);
        assert_eq!(fx.store.take_attempt("login:skew", 3, every, skewed).await.expect("s"), None);
        for i in 0..2 {
            let taken = fx.store.take_attempt("login:skew", 3, every, now).await.expect("s");
            assert_eq!(taken, None, "attempt {i} after the skewed one is within the burst");
        }
        assert!(fx.store.take_attempt("login:skew", 3, every, now).await.expect("s").is_some());
        // Another key, and another purpose, are limited apart.
        assert_eq!(fx.store.take_attempt("login:grace", 3, every, now).await.expect("g"), None);
        assert_eq!(fx.store.take_attempt("reset:ada", 3, every, now).await.expect("r"), None);
        // Forgiven, one more goes; a period later, one more again.
        fx.store.forgive_attempt("login:ada", every, now).await.expect("forgive");
        assert_eq!(fx.store.take_attempt("login:ada", 3, every, now).await.expect("t"), None);
        assert!(fx.store.take_attempt("login:ada", 3, every, now).await.expect("t").is_some());
        let later = now + TimeDelta::seconds(61);
        assert_eq!(fx.store.take_attempt("login:ada", 3, every, later).await.expect("t"), None);

        // A flood spread over three servers at once.
        let servers = [Arc::clone(&fx.store), fx.another().await, fx.another().await];
        let mut flood = Vec::new();
        for i in 0..30 {
            let store = Arc::clone(&servers[i % 3]);
            flood.push(tokio::spawn(async move {
                store.take_attempt("login:flooded", 5, every, now).await
            }));
        }
        let mut admitted = 0;
        for attempt in flood {
            if attempt.await.expect("task").expect("take").is_none() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5, "the burst, and not one more");
    })
    .await;
}

/// Text no stored row can hold (a NUL, which PostgreSQL's text refuses)
/// finds nothing, on either store, rather than failing.
async fn lookups_by_text_no_row_can_hold_find_nothing(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let t = tenant(store, "a@example.com").await;
        let nul = "a\0b";
        let found = store.get_user_by_email("a\0@example.com").await;
        assert!(matches!(found, Err(StoreError::NotFound)), "{found:?}");
        let found = store.get_connection(&t.org, &ConnectionId::from(nul.to_owned())).await;
        assert!(matches!(found, Err(StoreError::NotFound)), "{found:?}");
        let found = store.session_context(&SessionId::from(nul.to_owned()), &t.org).await;
        assert!(matches!(found, Err(StoreError::NotFound)), "{found:?}");
        let found = store.connection_by_key_hash(nul).await;
        assert!(matches!(found, Err(StoreError::NotFound)), "{found:?}");
    })
    .await;
}

on_both_stores! {
    lookups_by_text_no_row_can_hold_find_nothing,
    attempts_are_limited_per_key_across_servers,
    a_shared_secret_is_stored_once_and_the_same_for_all,
    migrations_run_once_and_reopening_is_idempotent,
    a_database_from_a_newer_binary_is_refused,
    emails_are_unique_case_insensitively,
    a_failed_sign_up_leaves_nothing_behind,
    organisation_scoped_queries_never_reach_another_organisation,
    an_organisation_always_keeps_an_owner,
    of_concurrent_consumes_exactly_one_wins,
    tokens_are_valid_only_for_their_kind_and_until_they_expire,
    sessions_are_revoked_one_by_one_or_all_at_once,
    verification_and_reset_consume_their_token,
    invitations_admit_only_the_invited_email_once,
    profile_password_and_verification_updates,
    data_survives_closing_and_reopening,
    connections_are_created_listed_updated_and_deleted,
    a_rotated_key_stops_matching_at_once,
    schemas_are_saved_replaced_and_shown_on_the_connection,
    history_pages_newest_first_and_filters_by_connection,
    questions_recorded_at_once_each_get_their_own_result,
    a_page_of_history_is_at_most_two_hundred,
    history_filters_by_person_outcome_and_search_and_names_the_asker,
    deleting_a_question_needs_its_asker_or_an_owner_or_admin,
    a_conversation_returns_its_newest_turns_oldest_first,
    approved_examples_are_correct_answers_newest_first_once_per_question,
    deleting_a_connection_deletes_its_schema_and_history,
    platform_calls_never_reach_another_organisation,
    platform_data_survives_closing_and_reopening,
    connection_names_are_unique_per_organisation_trimmed_and_case_insensitive,
    session_context_reads_session_user_and_membership_together,
    cancelled_reads_give_their_connection_back,
    a_used_reset_link_or_a_new_password_ends_every_other_reset_link,
    invitations_are_listed_and_revoked_within_their_organisation,
    invitations_end_with_their_senders_right_to_send_them,
}

/// A PostgreSQL store nobody answers for: opening tries again for a while,
/// then fails saying why, rather than hanging or failing at the first try.
#[tokio::test]
async fn an_unreachable_postgres_store_is_retried_then_refused_with_the_reason() {
    bounded(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let url = format!("postgres://postgres@127.0.0.1:{port}/nothing");
        let options = PostgresOptions {
            open_patience: Duration::from_millis(1200),
            ..PostgresOptions::default()
        };
        let started = std::time::Instant::now();
        match PostgresStore::open(&url, &options).await {
            Err(StoreError::Unavailable(reason)) => {
                assert!(reason.contains("cannot reach the PostgreSQL store"), "{reason}");
                assert!(reason.contains("refused") || reason.contains("connect"), "{reason}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // It tried more than once (the first wait is 250 ms).
        assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    })
    .await;
}

/// A statement stuck behind another session's lock ends with Unavailable
/// when the store's lock timeout passes: a call never hangs on the database.
#[tokio::test]
async fn a_postgres_call_stuck_on_a_lock_is_unavailable_not_a_hang() {
    bounded(async {
        let db = ScratchDb::create("store").await;
        let options = PostgresOptions {
            statement_timeout: Duration::from_millis(300),
            ..PostgresOptions::default()
        };
        let store = PostgresStore::open(&db.url, &options).await.expect("open");
        store.create_user(new_user("ada@example.com")).await.expect("user");
        let mut holder = db.client().await;
        let tx = holder.transaction().await.expect("begin");
        tx.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await.expect("lock");
        let stuck = store.get_user_by_email("ada@example.com").await;
        assert!(matches!(stuck, Err(StoreError::Unavailable(_))), "{stuck:?}");
        tx.rollback().await.expect("unlock");
        assert!(store.get_user_by_email("ada@example.com").await.is_ok(), "answers again");
    })
    .await;
}

/// A server without routing between servers must be alone on its PostgreSQL
/// store: a second one refuses to start, as does a routing one beside it,
/// until it is gone; servers that route share the store.
#[tokio::test]
async fn a_postgres_store_is_held_by_one_server_unless_servers_route() {
    bounded(async {
        let db = ScratchDb::create("store").await;
        let alone = PostgresOptions::default();
        let routed = PostgresOptions { sharing: Sharing::Routed, ..PostgresOptions::default() };
        let refused = |opened: Result<PostgresStore, StoreError>, why: &str| match opened {
            Err(StoreError::Unavailable(reason)) => assert!(reason.contains(why), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        };
        let first = PostgresStore::open(&db.url, &alone).await.expect("the first server");
        refused(PostgresStore::open(&db.url, &alone).await, "only one may");
        refused(PostgresStore::open(&db.url, &routed).await, "without routing");
        // Gone (a crash closes its connections the same way): the store is
        // free as soon as PostgreSQL has seen the connection close.
        drop(first);
        let mut shared = vec![open_soon(&db.url, &routed).await];
        shared.push(PostgresStore::open(&db.url, &routed).await.expect("a second routing server"));
        refused(PostgresStore::open(&db.url, &alone).await, "only one may");
        drop(shared);
        open_soon(&db.url, &alone).await.ping().await.expect("ping");
    })
    .await;
}

/// Opens the store, trying again for a few seconds while a server that just
/// went away still holds it.
async fn open_soon(url: &str, options: &PostgresOptions) -> PostgresStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match PostgresStore::open(url, options).await {
            Ok(store) => return store,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the store stayed held: {e:?}"),
        }
    }
}

/// A server that loses the connection holding its claim answers nothing
/// from the store (another may have taken it meanwhile) until it has the
/// claim again.
#[tokio::test]
async fn a_server_that_lost_its_claim_answers_nothing_until_it_has_it_again() {
    bounded(async {
        let db = ScratchDb::create("store").await;
        let alone = PostgresOptions::default();
        let first = PostgresStore::open(&db.url, &alone).await.expect("the first server");
        first.ping().await.expect("ping");
        // End the connection that holds the claim (the advisory lock's holder).
        let admin = db.client().await;
        let ended: bool = admin
            .query_one(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
                 JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()",
                &[],
            )
            .await
            .expect("terminate")
            .get(0);
        assert!(ended);
        let lost = poll_until(|| async { first.ping().await.is_err() }).await;
        assert!(lost, "the first server noticed");
        // Another server takes the store meanwhile; the first keeps out.
        let second = open_soon(&db.url, &alone).await;
        second.ping().await.expect("the second server answers");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            matches!(first.ping().await, Err(StoreError::Unavailable(_))),
            "the first server must not answer while another holds the store"
        );
        // Gone again: the first takes its claim back and answers.
        drop(second);
        let back = poll_until(|| async { first.ping().await.is_ok() }).await;
        assert!(back, "the first server took its claim back");
    })
    .await;
}

/// Whether `check` holds within ten seconds, asked every 50 ms.
async fn poll_until<F, Fut>(check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
