-- Named queries of the API's audit log (state.audit_log, migration 0005). Used by dispatcher/api/app.py.

-- name: insert
INSERT INTO state.audit_log (org_id, actor, method, path, query, status, client, request_id, duration_ms)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s);
