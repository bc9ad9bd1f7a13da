//! Store tests of personal access tokens: created, listed and deleted by
//! their user in one organisation, limited in number however many are
//! created at once, read by hash with their user's current membership, gone
//! with the membership, the organisation or the user, and their use
//! recorded at most once a minute.

use super::*;

/// Stores a token named `name` for `user` in `org` (expiring at `expires_at`);
/// the hash it is found by and the stored row.
async fn create(
    store: &dyn Store,
    user: &UserId,
    org: &OrgId,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(String, PersonalToken), StoreError> {
    let hash = fresh_hash();
    let new = NewPersonalToken { user_id: user, org_id: org, name, token_hash: &hash, expires_at };
    let token = store.create_personal_token(new).await?;
    Ok((hash, token))
}

/// The names of the tokens, in their order.
fn names(tokens: &[PersonalToken]) -> Vec<&str> {
    tokens.iter().map(|t| t.name.as_str()).collect()
}

/// How many personal tokens the store's database holds for `user` in `org`.
async fn rows_of(fx: &Fixture, user: &UserId, org: &OrgId) -> i64 {
    fx.scalar(&format!(
        "SELECT count(*) FROM personal_tokens WHERE user_id = '{user}' AND org_id = '{org}'"
    ))
    .await
}

fn not_found<T: std::fmt::Debug>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::NotFound))
}

async fn personal_tokens_are_created_listed_and_deleted_by_their_user(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = store.create_user_with_org(new_user("ada@example.com"), "Ada's".into()).await;
        let ada = ada.expect("sign up");
        let (user, org) = (&ada.user.id, &ada.organization.id);
        assert!(store.list_personal_tokens(user, org).await.expect("none yet").is_empty());

        let until = in_hours(24);
        let (_, first) = create(store, user, org, "laptop", Some(until)).await.expect("first");
        assert_eq!((&first.user_id, &first.org_id, first.name.as_str()), (user, org, "laptop"));
        assert_eq!(first.expires_at, Some(chrono::SubsecRound::trunc_subsecs(until, 3)));
        assert_eq!(first.last_used_at, None);
        let (second_hash, second) = create(store, user, org, "ci", None).await.expect("second");
        let (_, third) = create(store, user, org, "assistant", None).await.expect("third");
        assert_eq!(second.expires_at, None);
        assert_ne!(first.id, second.id);

        let listed = store.list_personal_tokens(user, org).await.expect("list");
        assert_eq!(names(&listed), ["assistant", "ci", "laptop"], "newest first");
        assert_eq!(listed, [third.clone(), second.clone(), first.clone()]);

        store.delete_personal_token(user, org, &second.id).await.expect("delete");
        let listed = store.list_personal_tokens(user, org).await.expect("list");
        assert_eq!(listed, [third, first]);
        let again = store.delete_personal_token(user, org, &second.id).await;
        assert!(not_found(&again), "deleted already: {again:?}");
        let used = store.personal_token_context(&second_hash).await;
        assert!(not_found(&used), "a deleted token stops working: {used:?}");
        let unknown = PersonalTokenId::from("no-such-token".to_owned());
        assert!(not_found(&store.delete_personal_token(user, org, &unknown).await));
    })
    .await;
}

async fn personal_tokens_are_seen_and_deleted_only_by_their_user_in_their_organisation(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = store.create_user_with_org(new_user("ada@example.com"), "Ada's".into()).await;
        let ada = ada.expect("ada");
        let (user, org) = (&ada.user.id, &ada.organization.id);
        // A colleague in Ada's organisation, and Eve, who is not in it.
        let colleague = join(store, org, "bob@example.com", Role::Admin).await;
        let eve = store.create_user_with_org(new_user("eve@example.com"), "Eve's".into()).await;
        let eve = eve.expect("eve");
        let eves_org = &eve.organization.id;
        // Ada joins Eve's organisation too, and has a token in each.
        let invitation = fresh_hash();
        let invite = NewToken::invitation(
            eves_org,
            &eve.user.id,
            &ada.user.email,
            Role::Member,
            invitation.clone(),
            in_hours(1),
        );
        store.create_token(invite).await.expect("invitation");
        store.accept_invitation(&invitation, user, Utc::now()).await.expect("join eve's");
        let (_, token) = create(store, user, org, "mine", None).await.expect("ada's token");
        let (_, at_eves) =
            create(store, user, eves_org, "at eve's", None).await.expect("ada's token at eve's");
        let (_, eves) = create(store, &eve.user.id, eves_org, "eve's", None).await.expect("eve's");

        // The colleague sees only their own (none), and cannot delete Ada's.
        let theirs = store.list_personal_tokens(&colleague.id, org).await.expect("colleague's");
        assert!(theirs.is_empty(), "{theirs:?}");
        let deleted = store.delete_personal_token(&colleague.id, org, &token.id).await;
        assert!(not_found(&deleted), "another user's token: {deleted:?}");
        // Eve is no member of Ada's organisation: nothing to list or delete there.
        let listed = store.list_personal_tokens(&eve.user.id, org).await;
        assert!(not_found(&listed), "not a member: {listed:?}");
        let deleted = store.delete_personal_token(&eve.user.id, org, &token.id).await;
        assert!(not_found(&deleted), "{deleted:?}");
        let deleted = store.delete_personal_token(&eve.user.id, eves_org, &at_eves.id).await;
        assert!(not_found(&deleted), "Ada's token in Eve's own organisation: {deleted:?}");
        // Ada's token named with the other organisation, either way.
        let deleted = store.delete_personal_token(user, eves_org, &token.id).await;
        assert!(not_found(&deleted), "another organisation: {deleted:?}");
        let deleted = store.delete_personal_token(user, org, &at_eves.id).await;
        assert!(not_found(&deleted), "{deleted:?}");
        let deleted = store.delete_personal_token(user, eves_org, &eves.id).await;
        assert!(not_found(&deleted), "{deleted:?}");

        // Each list holds its own organisation's tokens of its user; nothing was deleted.
        assert_eq!(store.list_personal_tokens(user, org).await.expect("ada's"), [token]);
        assert_eq!(store.list_personal_tokens(user, eves_org).await.expect("at eve's"), [at_eves]);
        assert_eq!(
            store.list_personal_tokens(&eve.user.id, eves_org).await.expect("eve's"),
            [eves]
        );
        // Only a member gets a token.
        let outsider = create(store, &eve.user.id, org, "sneaky", None).await;
        assert!(not_found(&outsider), "{outsider:?}");
        let nobody = UserId::from("nobody".to_owned());
        assert!(not_found(&create(store, &nobody, org, "ghost", None).await));
        assert!(not_found(&store.list_personal_tokens(&nobody, org).await));
        assert_eq!(rows_of(&fx, &eve.user.id, org).await, 0);
    })
    .await;
}

async fn a_user_has_at_most_fifty_personal_tokens_in_an_organisation(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = store.create_user_with_org(new_user("ada@example.com"), "Ada's".into()).await;
        let ada = ada.expect("ada");
        let (user, org) = (&ada.user.id, &ada.organization.id);
        let bob = join(store, org, "bob@example.com", Role::Member).await;
        let (other_org, _) =
            store.create_organization(user, "Second".into()).await.expect("another org");

        let mut first = None;
        for i in 0..MAX_PERSONAL_TOKENS {
            // Expired tokens count too.
            let expires = if i % 2 == 0 { Some(in_hours(-1)) } else { None };
            let (_, token) =
                create(store, user, org, &format!("t{i}"), expires).await.expect("under the cap");
            first.get_or_insert(token);
        }
        let over = create(store, user, org, "one too many", None).await;
        assert!(
            matches!(over, Err(StoreError::Conflict(ConflictKind::PersonalTokenLimit))),
            "{over:?}"
        );
        assert_eq!(rows_of(&fx, user, org).await, MAX_PERSONAL_TOKENS as i64);
        // The limit is per user and per organisation.
        create(store, &bob.id, org, "bob's", None).await.expect("another user");
        create(store, user, &other_org.id, "elsewhere", None).await.expect("another org");
        // Deleting one makes room for one.
        let first = first.expect("a first token");
        store.delete_personal_token(user, org, &first.id).await.expect("delete");
        create(store, user, org, "replacement", None).await.expect("room again");
        let over = create(store, user, org, "one too many", None).await;
        assert!(matches!(over, Err(StoreError::Conflict(_))), "{over:?}");
        assert_eq!(
            store.list_personal_tokens(user, org).await.expect("list").len(),
            MAX_PERSONAL_TOKENS
        );
    })
    .await;
}

async fn personal_tokens_created_at_once_never_pass_the_limit(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        // A second store on the same data races through its own connections,
        // as another replica (or process) would.
        let other = fx.another().await;
        let ada = fx.store.create_user_with_org(new_user("ada@example.com"), "Ada's".into()).await;
        let ada = ada.expect("ada");
        let attempts = MAX_PERSONAL_TOKENS + 10;
        let mut tasks = Vec::new();
        for i in 0..attempts {
            let store = if i % 2 == 0 { Arc::clone(&fx.store) } else { Arc::clone(&other) };
            let (user, org) = (ada.user.id.clone(), ada.organization.id.clone());
            tasks.push(tokio::spawn(async move {
                create(store.as_ref(), &user, &org, &format!("t{i}"), None).await
            }));
        }
        let (mut created, mut refused) = (0, 0);
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => created += 1,
                Err(StoreError::Conflict(ConflictKind::PersonalTokenLimit)) => refused += 1,
                Err(e) => panic!("neither created nor refused: {e:?}"),
            }
        }
        assert_eq!((created, refused), (MAX_PERSONAL_TOKENS, attempts - MAX_PERSONAL_TOKENS));
        let (user, org) = (&ada.user.id, &ada.organization.id);
        assert_eq!(rows_of(&fx, user, org).await, MAX_PERSONAL_TOKENS as i64);
    })
    .await;
}

async fn a_personal_token_acts_only_while_its_user_is_a_member(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = store.create_user_with_org(new_user("ada@example.com"), "Ada's".into()).await;
        let ada = ada.expect("ada");
        let org = &ada.organization.id;
        let bob = join(store, org, "bob@example.com", Role::Admin).await;
        let (hash, token) = create(store, &bob.id, org, "bob's", None).await.expect("token");
        let (kept_hash, _) = create(store, &ada.user.id, org, "ada's", None).await.expect("ada's");

        let (found, user, membership) = store.personal_token_context(&hash).await.expect("context");
        assert_eq!(found, token);
        assert_eq!(user, bob);
        assert_eq!((&membership.org_id, &membership.user_id), (org, &bob.id));
        assert_eq!(membership.role, Role::Admin);
        // The role is the one the user has now.
        store.set_role(org, &bob.id, Role::Member).await.expect("demote");
        let (_, _, membership) = store.personal_token_context(&hash).await.expect("context");
        assert_eq!(membership.role, Role::Member);

        for unknown in [fresh_hash(), String::new(), "a\0b".to_owned()] {
            let found = store.personal_token_context(&unknown).await;
            assert!(not_found(&found), "{unknown:?}: {found:?}");
        }
        // Expiry is the caller's to check: an expired token is still read.
        let (expired_hash, expired) =
            create(store, &bob.id, org, "old", Some(in_hours(-1))).await.expect("expired");
        let (found, _, _) = store.personal_token_context(&expired_hash).await.expect("read");
        assert_eq!(found.expires_at, expired.expires_at);

        // Removed from the organisation: every token of theirs there is gone.
        store.remove_member(org, &bob.id).await.expect("remove");
        for hash in [&hash, &expired_hash] {
            let found = store.personal_token_context(hash).await;
            assert!(not_found(&found), "{found:?}");
        }
        assert_eq!(rows_of(&fx, &bob.id, org).await, 0, "the rows go with the membership");
        let listed = store.list_personal_tokens(&bob.id, org).await;
        assert!(not_found(&listed), "{listed:?}");
        // Back in: the old tokens stay gone.
        let invitation_hash = fresh_hash();
        let token = NewToken::invitation(
            org,
            &ada.user.id,
            &bob.email,
            Role::Member,
            invitation_hash.clone(),
            in_hours(1),
        );
        store.create_token(token).await.expect("invitation");
        store.accept_invitation(&invitation_hash, &bob.id, Utc::now()).await.expect("rejoin");
        assert!(not_found(&store.personal_token_context(&hash).await));
        assert!(store.list_personal_tokens(&bob.id, org).await.expect("list").is_empty());
        // Others' tokens are untouched.
        store.personal_token_context(&kept_hash).await.expect("ada's still works");
    })
    .await;
}

async fn personal_tokens_go_with_their_organisation_and_their_user(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = store.create_user_with_org(new_user("ada@example.com"), "Ada's".into()).await;
        let ada = ada.expect("ada");
        let (doomed, _) =
            store.create_organization(&ada.user.id, "Doomed".into()).await.expect("org");
        let (in_doomed, _) =
            create(store, &ada.user.id, &doomed.id, "doomed", None).await.expect("token");
        let (kept, _) =
            create(store, &ada.user.id, &ada.organization.id, "kept", None).await.expect("token");

        store.delete_organization(&doomed.id, &ada.user.id).await.expect("delete org");
        assert!(not_found(&store.personal_token_context(&in_doomed).await));
        assert_eq!(rows_of(&fx, &ada.user.id, &doomed.id).await, 0);
        store.personal_token_context(&kept).await.expect("another organisation's stays");

        // An account deleted (no store call does yet: straight in the
        // database, with the store's foreign key rules) takes its tokens.
        let bob = join(store, &ada.organization.id, "bob@example.com", Role::Member).await;
        let (bobs, _) =
            create(store, &bob.id, &ada.organization.id, "bob's", None).await.expect("token");
        let delete = format!("DELETE FROM users WHERE id = '{}'", bob.id);
        match kind {
            // A raw SQLite connection enforces foreign keys only when asked.
            Kind::Sqlite => fx.exec(&format!("PRAGMA foreign_keys = ON; {delete}")).await,
            Kind::Postgres => fx.exec(&delete).await,
        }
        assert!(not_found(&store.personal_token_context(&bobs).await));
        assert_eq!(rows_of(&fx, &bob.id, &ada.organization.id).await, 0);
        store.personal_token_context(&kept).await.expect("another user's stays");
    })
    .await;
}

async fn a_personal_token_s_use_is_recorded_at_most_once_a_minute(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = store.create_user_with_org(new_user("ada@example.com"), "Ada's".into()).await;
        let ada = ada.expect("ada");
        let (user, org) = (&ada.user.id, &ada.organization.id);
        let (hash, token) = create(store, user, org, "busy", None).await.expect("token");
        let (_, idle) = create(store, user, org, "idle", None).await.expect("token");
        let last_used =
            || async { store.personal_token_context(&hash).await.expect("context").0.last_used_at };
        let ms = |t: DateTime<Utc>| chrono::SubsecRound::trunc_subsecs(t, 3);

        let start = Utc::now();
        store.touch_personal_token(&token.id, start).await.expect("first use");
        assert_eq!(last_used().await, Some(ms(start)));
        // Within the minute (and at it exactly): no write.
        for later in [1, 30, 60] {
            let at = start + TimeDelta::seconds(later);
            store.touch_personal_token(&token.id, at).await.expect("use");
            assert_eq!(last_used().await, Some(ms(start)), "{later} s later");
        }
        // Past it: written.
        let next = start + TimeDelta::milliseconds(60_001);
        store.touch_personal_token(&token.id, next).await.expect("a minute later");
        assert_eq!(last_used().await, Some(ms(next)));
        // A server whose clock is behind never moves it back.
        store.touch_personal_token(&token.id, start).await.expect("earlier");
        assert_eq!(last_used().await, Some(ms(next)));
        // Only that token; and one that is gone is no error.
        let listed = store.list_personal_tokens(user, org).await.expect("list");
        let idle_now = listed.iter().find(|t| t.id == idle.id).expect("idle");
        assert_eq!(idle_now.last_used_at, None);
        let gone = PersonalTokenId::from("deleted-meanwhile".to_owned());
        store.touch_personal_token(&gone, next).await.expect("a deleted token is Ok");
    })
    .await;
}

on_both_stores! {
    personal_tokens_are_created_listed_and_deleted_by_their_user,
    personal_tokens_are_seen_and_deleted_only_by_their_user_in_their_organisation,
    a_user_has_at_most_fifty_personal_tokens_in_an_organisation,
    personal_tokens_created_at_once_never_pass_the_limit,
    a_personal_token_acts_only_while_its_user_is_a_member,
    personal_tokens_go_with_their_organisation_and_their_user,
    a_personal_token_s_use_is_recorded_at_most_once_a_minute,
}
