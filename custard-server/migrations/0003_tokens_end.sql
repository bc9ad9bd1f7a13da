-- One-time tokens can end without being used, and invitations remember who
-- sent them. Applied once inside a transaction by the store.

-- When the token was ended unused: a newer reset link was used or the
-- password changed (reset tokens), or the invitation was revoked, or its
-- sender was removed or lost the role it invited to (invitations). An ended
-- token is never accepted again.
ALTER TABLE one_time_tokens ADD COLUMN revoked_at INTEGER;

-- Who sent an invitation (NULL for invitations sent before this migration
-- and for other kinds); an invitation goes with its sender's account.
ALTER TABLE one_time_tokens ADD COLUMN invited_by TEXT REFERENCES users (id) ON DELETE CASCADE;

CREATE INDEX one_time_tokens_by_inviter ON one_time_tokens (invited_by);
