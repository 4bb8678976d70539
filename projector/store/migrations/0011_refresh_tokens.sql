-- Refresh tokens (login and register with refresh_token: true). A device
-- then has an access token that expires, the hash of its refresh token, and
-- for a while after a refresh its previous access token, which stays valid
-- until the new one is first used or the previous one expires. All are
-- SHA-256 hashes, like token_hash; expiry times are unix milliseconds, NULL
-- for a token that does not expire.
ALTER TABLE devices
    ADD COLUMN expires_ts      bigint,
    ADD COLUMN refresh_hash    bytea UNIQUE,
    ADD COLUMN prev_token_hash bytea UNIQUE,
    ADD COLUMN prev_expires_ts bigint;
