-- Who created each token: the id of the token that made the request, NULL for tokens made out
-- of band (`bldst server bootstrap`, `bldst server token create`) and for tokens created
-- before this migration. Revoking a token revokes the tokens it created, transitively, by
-- walking this column. Keep in step with ../sqlite/0002_token_created_by.sql.
ALTER TABLE api_tokens ADD COLUMN created_by TEXT REFERENCES api_tokens (id);
CREATE INDEX api_tokens_created_by ON api_tokens (created_by);
