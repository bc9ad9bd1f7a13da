//! Store tests of sessions signed out together, invitations as their
//! recipients see them, sent again and accepted without their link, and
//! organisations created and deleted.

use super::*;

/// A verified user with an organisation of their own, as sign-up leaves them.
async fn verified_owner(store: &dyn Store, email: &str, org: &str) -> SignUp {
    let signup = store.create_user_with_org(new_user(email), org.into()).await.expect("sign up");
    store.mark_email_verified(&signup.user.id).await.expect("verify");
    signup
}

/// Invites `email` to `org` as `role` from `by`; the token hash and the row.
async fn invite(
    store: &dyn Store,
    org: &OrgId,
    by: &UserId,
    email: &str,
    role: Role,
) -> (String, OneTimeToken) {
    let hash = fresh_hash();
    let token = NewToken::invitation(org, by, email, role, hash.clone(), in_hours(24));
    (hash.clone(), store.create_token(token).await.expect("invitation"))
}

fn active(session: &Session) -> bool {
    session.is_active(Utc::now())
}

async fn a_password_change_signs_out_every_other_session_for_good(kind: Kind) {
    bounded(async {
        let mut fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = verified_owner(store, "ada@example.com", "Ada's").await.user;
        let bob = verified_owner(store, "bob@example.com", "Bob's").await.user;
        let mut sessions = Vec::new();
        for _ in 0..3 {
            sessions.push(
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
            .expect("bob's");
        let keep = sessions[1].id.clone();

        let signed_out = store
            .change_password(&ada.id, &ada.password_hash, "h2".into(), &keep)
            .await
            .expect("change");
        assert_eq!(signed_out, 2, "the two other sessions");
        assert_eq!(store.get_user(&ada.id).await.expect("ada").password_hash, "h2");

        // Across a restart: the others stay out, the changer and other users stay in.
        fx.reopen().await;
        let store = fx.store.as_ref();
        for (i, s) in sessions.iter().enumerate() {
            let now = store.get_session(&s.id).await.expect("session");
            assert_eq!(active(&now), s.id == keep, "session {i}");
        }
        assert!(active(&store.get_session(&bobs.id).await.expect("bob's")), "another user");

        // "Sign out other sessions" on its own.
        let newer = store
            .create_session(&ada.id, in_hours(1), SessionGrant::Password("h2"))
            .await
            .expect("newer");
        assert_eq!(store.revoke_other_sessions(&ada.id, &keep).await.expect("others"), 1);
        assert!(!active(&store.get_session(&newer.id).await.expect("newer")));
        assert!(active(&store.get_session(&keep).await.expect("kept")));
        assert_eq!(store.revoke_other_sessions(&ada.id, &keep).await.expect("again"), 0);
        let unknown = UserId::from("nobody".to_owned());
        let changed = store.change_password(&unknown, "h", "h".into(), &keep).await;
        assert!(matches!(changed, Err(StoreError::NotFound)), "{changed:?}");
    })
    .await;
}

async fn a_password_change_ends_the_outstanding_reset_links(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = verified_owner(store, "ada@example.com", "Ada's").await.user;
        let session = store
            .create_session(&ada.id, in_hours(1), SessionGrant::Password(&ada.password_hash))
            .await
            .expect("session");
        let hash = fresh_hash();
        store
            .create_token(NewToken::password_reset(&ada, hash.clone(), in_hours(1)))
            .await
            .expect("reset token");
        store
            .change_password(&ada.id, &ada.password_hash, "h2".into(), &session.id)
            .await
            .expect("change");
        let used = store.consume_token(TokenKind::PasswordReset, &hash, Utc::now()).await;
        assert!(matches!(used, Err(StoreError::NotFound)), "{used:?}");
    })
    .await;
}

async fn recipients_see_their_pending_invitations_with_organisation_and_sender(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let host = verified_owner(store, "host@example.com", "Host team").await;
        let other = verified_owner(store, "other@example.com", "Other team").await;
        let admin = join(store, &host.organization.id, "admin@example.com", Role::Admin).await;
        let (org, owner) = (&host.organization.id, &host.user.id);

        let (first, _) = invite(store, org, owner, "Guest@Example.com", Role::Member).await;
        invite(store, &other.organization.id, &other.user.id, "guest@example.com", Role::Admin)
            .await;
        let (by_admin, _) = invite(store, org, &admin.id, "guest@example.com", Role::Admin).await;
        let (revoked, row) = invite(store, org, owner, "guest@example.com", Role::Member).await;
        store.revoke_invitation(org, &row.id, Utc::now()).await.expect("revoke");
        invite(store, org, owner, "someone@example.com", Role::Member).await;

        let found = store.invitation_by_token(&first, Utc::now()).await.expect("by token");
        assert_eq!(
            (found.email.as_str(), found.role, &found.org_id, found.org_name.as_str()),
            ("guest@example.com", Role::Member, org, "Host team")
        );
        assert_eq!(found.invited_by_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(found.invited_by_email.as_deref(), Some("host@example.com"));
        for gone in [revoked.as_str(), "unknown"] {
            let found = store.invitation_by_token(gone, Utc::now()).await;
            assert!(matches!(found, Err(StoreError::NotFound)), "{found:?}");
        }
        let later = store.invitation_by_token(&first, in_hours(48)).await;
        assert!(matches!(later, Err(StoreError::NotFound)), "expired: {later:?}");

        let orgs = |list: &[ReceivedInvitation]| -> Vec<(String, Role)> {
            list.iter().map(|i| (i.org_name.clone(), i.role)).collect()
        };
        let mine = store.invitations_for_email(" GUEST@example.com", Utc::now()).await;
        let mine = mine.expect("for email");
        assert_eq!(
            orgs(&mine),
            [
                ("Host team".to_owned(), Role::Member),
                ("Other team".to_owned(), Role::Admin),
                ("Host team".to_owned(), Role::Admin),
            ],
            "pending ones to this address, oldest first, from every organisation"
        );

        // A sender demoted below the role loses the invitation at once.
        store.set_role(org, &admin.id, Role::Member).await.expect("demote");
        let mine = store.invitations_for_email("guest@example.com", Utc::now()).await;
        assert_eq!(mine.expect("for email").len(), 2);
        let found = store.invitation_by_token(&by_admin, Utc::now()).await;
        assert!(matches!(found, Err(StoreError::NotFound)), "{found:?}");
        assert!(
            store.invitations_for_email("nobody@example.com", Utc::now()).await.unwrap().is_empty()
        );
    })
    .await;
}

async fn an_invitation_is_accepted_by_id_only_by_its_verified_recipient(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let host = verified_owner(store, "host@example.com", "Host team").await;
        let (org, owner) = (&host.organization.id, &host.user.id);
        let guest = store.create_user(new_user("guest@example.com")).await.expect("guest");
        let stranger = verified_owner(store, "stranger@example.com", "Elsewhere").await.user;
        let (hash, row) = invite(store, org, owner, "guest@example.com", Role::Admin).await;

        let wrong = store.accept_invitation_by_id(&row.id, &stranger.id, Utc::now()).await;
        assert!(matches!(wrong, Err(StoreError::NotFound)), "another address: {wrong:?}");
        let unverified = store.accept_invitation_by_id(&row.id, &guest.id, Utc::now()).await;
        assert!(matches!(unverified, Err(StoreError::NotFound)), "unverified: {unverified:?}");
        store.mark_email_verified(&guest.id).await.expect("verify");
        let other_id = TokenId::from("no-such-invitation".to_owned());
        let unknown = store.accept_invitation_by_id(&other_id, &guest.id, Utc::now()).await;
        assert!(matches!(unknown, Err(StoreError::NotFound)));

        let joined = store.accept_invitation_by_id(&row.id, &guest.id, Utc::now()).await;
        let joined = joined.expect("accepted");
        assert_eq!((&joined.org_id, joined.role), (org, Role::Admin));
        let again = store.accept_invitation_by_id(&row.id, &guest.id, Utc::now()).await;
        assert!(matches!(again, Err(StoreError::NotFound)), "once: {again:?}");
        let by_link = store.accept_invitation(&hash, &guest.id, Utc::now()).await;
        assert!(matches!(by_link, Err(StoreError::NotFound)), "its link is used: {by_link:?}");

        // Already a member: a conflict, and the invitation stays pending.
        let (_, second) = invite(store, org, owner, "guest@example.com", Role::Member).await;
        let dup = store.accept_invitation_by_id(&second.id, &guest.id, Utc::now()).await;
        assert!(matches!(dup, Err(StoreError::Conflict(ConflictKind::Membership))), "{dup:?}");
        assert_eq!(store.list_invitations(org, Utc::now()).await.expect("list").len(), 1);
    })
    .await;
}

async fn an_invitation_sent_again_gets_a_new_link_expiry_and_sender(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let host = verified_owner(store, "host@example.com", "Host team").await;
        let other = verified_owner(store, "other@example.com", "Other team").await;
        let (org, owner) = (&host.organization.id, &host.user.id);
        let admin = join(store, org, "admin@example.com", Role::Admin).await;
        let (old, row) = invite(store, org, owner, "guest@example.com", Role::Member).await;

        let fresh = fresh_hash();
        let until = in_hours(24 * 7);
        let other_org = store
            .renew_invitation(
                &other.organization.id,
                &row.id,
                owner,
                fresh_hash(),
                until,
                Utc::now(),
            )
            .await;
        assert!(matches!(other_org, Err(StoreError::NotFound)), "another organisation's");
        let renewed = store
            .renew_invitation(org, &row.id, &admin.id, fresh.clone(), until, Utc::now())
            .await
            .expect("renew");
        assert_eq!((&renewed.id, renewed.created_at), (&row.id, row.created_at));
        assert_eq!(renewed.expires_at, chrono::SubsecRound::trunc_subsecs(until, 3));
        assert_eq!(renewed.invited_by.as_ref(), Some(&admin.id));
        assert_eq!(renewed.invited_by_email.as_deref(), Some("admin@example.com"));

        let old_link = store.invitation_by_token(&old, Utc::now()).await;
        assert!(matches!(old_link, Err(StoreError::NotFound)), "the old link is dead");
        let new_link = store.invitation_by_token(&fresh, Utc::now()).await.expect("new link");
        assert_eq!(new_link.id, row.id);
        assert_eq!(store.list_invitations(org, Utc::now()).await.expect("list").len(), 1);

        store.revoke_invitation(org, &row.id, Utc::now()).await.expect("revoke");
        let revoked =
            store.renew_invitation(org, &row.id, owner, fresh_hash(), until, Utc::now()).await;
        assert!(matches!(revoked, Err(StoreError::NotFound)), "a revoked one stays revoked");
    })
    .await;
}

async fn organisations_are_created_and_deleted_with_everything_they_hold(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let doomed = tenant(store, "owner@example.com").await;
        let kept = tenant(store, "neighbour@example.com").await;
        let member = join(store, &doomed.org, "member@example.com", Role::Member).await;
        let conversation = conversation_id("c");
        let asked = store
            .record_query(new_query(&doomed.connection, &doomed.user, &conversation, "how many?"))
            .await
            .expect("question");
        let theirs = store
            .record_query(new_query(&kept.connection, &kept.user, &conversation, "how many?"))
            .await
            .expect("their question");
        invite(store, &doomed.org, &doomed.user, "later@example.com", Role::Member).await;
        let session = store
            .create_session(&member.id, in_hours(1), SessionGrant::Password(&member.password_hash))
            .await
            .expect("session");

        // Only an owner, checked where it deletes.
        let by_member = store.delete_organization(&doomed.org, &member.id).await;
        assert!(matches!(by_member, Err(StoreError::Stale)), "{by_member:?}");
        let by_stranger = store.delete_organization(&doomed.org, &kept.user).await;
        assert!(matches!(by_stranger, Err(StoreError::Stale)), "{by_stranger:?}");
        assert!(store.get_organization(&doomed.org).await.is_ok(), "still there");
        let gone = store.delete_organization(&doomed.org, &doomed.user).await.expect("delete");
        assert_eq!(gone, std::slice::from_ref(&doomed.connection.id));
        assert!(matches!(store.get_organization(&doomed.org).await, Err(StoreError::NotFound)));
        let connection = store.get_connection(&doomed.org, &doomed.connection.id).await;
        assert!(matches!(connection, Err(StoreError::NotFound)));
        assert!(matches!(store.get_query(&doomed.org, &asked.id).await, Err(StoreError::NotFound)));
        assert!(store.list_invitations(&doomed.org, Utc::now()).await.expect("none").is_empty());
        let later = store.invitations_for_email("later@example.com", Utc::now()).await;
        assert!(later.expect("none").is_empty());
        // The people stay, in no organisation, still signed in.
        assert!(store.organizations_of_user(&member.id).await.expect("orgs").is_empty());
        assert!(store.get_user(&doomed.user).await.is_ok());
        assert!(active(&store.get_session(&session.id).await.expect("session")));
        let context = store.session_context(&session.id, &doomed.org).await;
        assert!(matches!(context, Err(StoreError::NotFound)), "no membership to act in");
        // The neighbour is untouched.
        assert!(store.get_query(&kept.org, &theirs.id).await.is_ok());
        assert_eq!(store.list_connections(&kept.org).await.expect("theirs").len(), 1);
        let again = store.delete_organization(&doomed.org, &doomed.user).await;
        assert!(matches!(again, Err(StoreError::NotFound)), "{again:?}");

        // A new one: the user owns it.
        let (org, membership) =
            store.create_organization(&member.id, "Fresh start".into()).await.expect("create");
        assert_eq!((org.name.as_str(), membership.role), ("Fresh start", Role::Owner));
        let orgs = store.organizations_of_user(&member.id).await.expect("orgs");
        assert_eq!(orgs, [(org.clone(), membership)]);
        let nobody = UserId::from("nobody".to_owned());
        let orphan = store.create_organization(&nobody, "Nobody's".into()).await;
        assert!(matches!(orphan, Err(StoreError::NotFound)), "{orphan:?}");
    })
    .await;
}

/// Nothing outlives the credential that opened it: a sign-in that checked
/// the old password cannot open a session after the change, a change
/// checked against an old hash or from a signed-out session changes nothing,
/// and taking over from a session signs it out (once).
async fn sessions_and_changes_stand_on_what_was_checked(kind: Kind) {
    bounded(async {
        let fx = Fixture::new(kind).await;
        let store = fx.store.as_ref();
        let ada = verified_owner(store, "ada@example.com", "Ada's").await.user;
        let old = ada.password_hash.clone();
        let first = store
            .create_session(&ada.id, in_hours(1), SessionGrant::Password(&old))
            .await
            .expect("a session on the current password");

        // A concurrent change from another session checked against an old hash.
        let stale = store.change_password(&ada.id, "not-the-hash", "h3".into(), &first.id).await;
        assert!(matches!(stale, Err(StoreError::Stale)), "{stale:?}");
        assert_eq!(store.get_user(&ada.id).await.expect("ada").password_hash, old, "unchanged");

        store.change_password(&ada.id, &old, "h2".into(), &first.id).await.expect("change");
        let late = store.create_session(&ada.id, in_hours(1), SessionGrant::Password(&old)).await;
        assert!(matches!(late, Err(StoreError::Stale)), "a sign-in on the old password: {late:?}");
        store
            .create_session(&ada.id, in_hours(1), SessionGrant::Password("h2"))
            .await
            .expect("a sign-in on the new password");

        // Taking over signs the old session out; a signed-out one cannot be taken over.
        let next = store
            .create_session(&ada.id, in_hours(1), SessionGrant::Replaces(&first.id))
            .await
            .expect("switching organisation");
        assert!(!active(&store.get_session(&first.id).await.expect("first")));
        assert!(active(&store.get_session(&next.id).await.expect("next")));
        let again = store.create_session(&ada.id, in_hours(1), SessionGrant::Replaces(&first.id));
        assert!(matches!(again.await, Err(StoreError::Stale)), "the old one is out");

        // A change from a session that was signed out meanwhile changes nothing.
        let from_old = store.change_password(&ada.id, "h2", "h4".into(), &first.id).await;
        assert!(matches!(from_old, Err(StoreError::Stale)), "{from_old:?}");
        assert_eq!(store.get_user(&ada.id).await.expect("ada").password_hash, "h2");
    })
    .await;
}

on_both_stores! {
    a_password_change_signs_out_every_other_session_for_good,
    a_password_change_ends_the_outstanding_reset_links,
    recipients_see_their_pending_invitations_with_organisation_and_sender,
    an_invitation_is_accepted_by_id_only_by_its_verified_recipient,
    an_invitation_sent_again_gets_a_new_link_expiry_and_sender,
    organisations_are_created_and_deleted_with_everything_they_hold,
    sessions_and_changes_stand_on_what_was_checked,
}
