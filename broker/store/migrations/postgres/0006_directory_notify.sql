-- Every node keeps mailboxes and workflows in memory (broker/store/pg_directory.py) and forgets them when a
-- change is announced on the channel mesh_directory. Triggers, not the store's own code, announce it, so a change
-- made by any client (the CLI of another release, an operator's SQL) reaches every node. NOTIFY is delivered at
-- commit, and repeats within one transaction are folded into one.
CREATE OR REPLACE FUNCTION mesh_directory_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mesh_directory', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

-- Only the columns a node keeps: a handshake (last_seen_at, last_client) changes nothing a node has cached.
-- A column added to the cached mailbox must be added here (tests/contract/test_pg_directory.py checks).
CREATE TRIGGER mailboxes_directory_changed
    AFTER INSERT OR DELETE OR TRUNCATE
        OR UPDATE OF mailbox_id, password, mailbox_name, ods_code, org_code, org_name, billing_entity, active
    ON mailboxes FOR EACH STATEMENT EXECUTE FUNCTION mesh_directory_changed();

CREATE TRIGGER workflows_directory_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflows
    FOR EACH STATEMENT EXECUTE FUNCTION mesh_directory_changed();

CREATE TRIGGER workflow_members_directory_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflow_members
    FOR EACH STATEMENT EXECUTE FUNCTION mesh_directory_changed();
