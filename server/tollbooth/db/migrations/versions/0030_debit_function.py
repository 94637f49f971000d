"""PostgreSQL: `tollbooth_debit`, the common DebitCredits in one statement (one round trip).

`tollbooth.credit.onecall` calls it in autocommit, so the statement is its own transaction: it
claims the request_id, resolves the account, locks the balance, takes the first spendable
grants in the engine's consumption order (`credit/engine.py`: priority, then soonest expiry,
no expiry last, then oldest), writes the grants, the balance, the ledger entry and the stored
response (the serialised `billing.v1.CreditDebit`, built here field by field as protobuf's
deterministic serialisation writes it), and returns that response.

A replay returns the key's stored row (nothing written). Anything else it does not do exactly
as `credit/debits.py` would (an account it cannot resolve, no balance row, an expiry due, a
short balance, more grants needed than the batch, a debit that depletes the balance and so
needs its notification) raises SQLSTATE TB001: the statement's transaction rolls back (the
claim with it), and the caller runs the existing path, which answers as before.

Amounts are NUMERIC: the columns' NUMERIC(38, 18) values, exact, no float anywhere; a
formatted amount is `trim_scale(x)::text`, which is `amounts.fmt`. SQLite: nothing to do.

Revision ID: 0030
Revises: 0029
"""

from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

VARINT = r"""
CREATE FUNCTION tollbooth_pb_varint(v bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    out bytea := '';
BEGIN
    IF v < 0 THEN
        RAISE EXCEPTION 'tollbooth_pb_varint: negative' USING ERRCODE = 'TB001';
    END IF;
    LOOP
        IF v < 128 THEN
            RETURN out || set_byte('\x00'::bytea, 0, v::int);
        END IF;
        out := out || set_byte('\x00'::bytea, 0, ((v & 127) | 128)::int);
        v := v >> 7;
    END LOOP;
END $$
"""

# A length-delimited field (a string, or a message's bytes); proto3 omits an empty string,
# so `always` is true only for a message field that is set.
FIELD = r"""
CREATE FUNCTION tollbooth_pb_field(f int, b bytea, always boolean) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF b IS NULL OR (length(b) = 0 AND NOT always) THEN
        RETURN '';
    END IF;
    RETURN tollbooth_pb_varint((f << 3) | 2) || tollbooth_pb_varint(length(b)) || b;
END $$
"""

DEBIT = r"""
CREATE FUNCTION tollbooth_debit(
    p_scope text, p_key text, p_hash text, p_claimed_at timestamptz,
    p_bearer boolean, p_ref text, p_account text,
    p_ctype text, p_amount numeric, p_reason text, p_metadata json,
    p_clock timestamptz, p_entry_id text, p_debit_id text, p_batch int,
    OUT outcome text, OUT response bytea, OUT request_hash text
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    acct_id text;
    acct_principal text;
    bal record;
    now_at timestamptz;
    ids text[];
    rems numeric[];
    helds numeric[];
    exps timestamptz[];
    n int;
    total numeric := 0;
    available numeric := 0;
    left_ numeric;
    part numeric;
    i int;
    w_ids text[] := '{}';
    w_rems numeric[] := '{}';
    w_states text[] := '{}';
    allocs json[] := '{}';
    pb_allocs bytea := '';
    balance_after numeric;
    v_depleted boolean;
    v_depletions int;
    ep numeric;
    secs bigint;
    nanos bigint;
    ts bytea := '';
BEGIN
    -- 1. The claim (as idempotency.claim / the pipeline's CLAIM): a concurrent holder of the
    -- key is waited out; a key claimed before answers with its stored row.
    INSERT INTO idempotency_keys (scope, key, request_hash, response, created_at)
    VALUES (p_scope, p_key, p_hash, NULL, p_claimed_at)
    ON CONFLICT (scope, key) DO NOTHING;
    IF NOT FOUND THEN
        SELECT k.request_hash, k.response INTO request_hash, response
        FROM idempotency_keys AS k WHERE k.scope = p_scope AND k.key = p_key;
        outcome := 'replay';
        RETURN;
    END IF;

    -- 2. The account, as accounts.service.resolve finds it; anything else: the old path.
    IF p_bearer THEN
        SELECT a.id, a.principal_id INTO acct_id, acct_principal
        FROM billing_accounts AS a WHERE a.id = p_account;
        IF NOT FOUND OR (p_ref <> '' AND p_ref <> acct_id AND p_ref <> acct_principal) THEN
            RAISE EXCEPTION 'tollbooth_debit: account' USING ERRCODE = 'TB001';
        END IF;
    ELSIF p_ref LIKE 'acct\_%' THEN
        SELECT a.id INTO acct_id FROM billing_accounts AS a WHERE a.id = p_ref;
    ELSE
        SELECT a.id INTO acct_id FROM billing_accounts AS a WHERE a.principal_id = p_ref;
    END IF;
    IF acct_id IS NULL THEN
        RAISE EXCEPTION 'tollbooth_debit: account' USING ERRCODE = 'TB001';
    END IF;

    -- 3. The balance lock (repository LOCK / lock_balance_figures) and debits.fast_start.
    SELECT b.balance, b.seq, b.next_event_at, b.depleted, b.depletions, b.updated_at INTO bal
    FROM credit_balances AS b
    WHERE b.billing_account_id = acct_id AND b.credit_type = p_ctype FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tollbooth_debit: no balance' USING ERRCODE = 'TB001';
    END IF;
    now_at := greatest(p_clock, bal.updated_at);
    IF bal.next_event_at IS NOT NULL AND bal.next_event_at <= now_at THEN
        RAISE EXCEPTION 'tollbooth_debit: expiry due' USING ERRCODE = 'TB001';
    END IF;
    IF bal.balance < p_amount THEN
        RAISE EXCEPTION 'tollbooth_debit: insufficient' USING ERRCODE = 'TB001';
    END IF;

    -- 4. The first p_batch spendable grants (the SPENDABLE query, read after the lock), then
    -- in engine.Grant.order_key order: (priority, expiry_key(expire_at), seq).
    SELECT array_agg(g.id ORDER BY g.priority, g.k, g.seq),
           array_agg(g.remaining ORDER BY g.priority, g.k, g.seq),
           array_agg(g.held ORDER BY g.priority, g.k, g.seq),
           array_agg(g.expire_at ORDER BY g.priority, g.k, g.seq),
           count(*), coalesce(sum(g.remaining), 0)
    INTO ids, rems, helds, exps, n, total
    FROM (
        SELECT s.id, s.seq, s.priority, s.expire_at, s.remaining, s.held,
               CASE WHEN s.expire_at IS NULL THEN 9223372036854775807
                    ELSE (extract(epoch FROM s.expire_at) * 1000000)::bigint END AS k
        FROM credit_grants AS s
        WHERE s.billing_account_id = acct_id AND s.credit_type = p_ctype
          AND s.state = 'active'
        ORDER BY s.priority, s.expiry_key, s.seq
        LIMIT p_batch
    ) AS g;
    -- debits.plan_debit: a full batch that does not cover it needs every grant.
    IF n = p_batch AND total < p_amount THEN
        RAISE EXCEPTION 'tollbooth_debit: batch' USING ERRCODE = 'TB001';
    END IF;
    -- engine.Book._take: live grants (no expiry, or one after now) in order.
    FOR i IN 1 .. n LOOP
        IF exps[i] IS NULL OR exps[i] > now_at THEN
            available := available + rems[i];
        END IF;
    END LOOP;
    IF available < p_amount THEN
        RAISE EXCEPTION 'tollbooth_debit: engine' USING ERRCODE = 'TB001';
    END IF;
    left_ := p_amount;
    FOR i IN 1 .. n LOOP
        EXIT WHEN left_ = 0;
        CONTINUE WHEN NOT (exps[i] IS NULL OR exps[i] > now_at);
        CONTINUE WHEN rems[i] <= 0;
        part := least(rems[i], left_);
        left_ := left_ - part;
        w_ids := w_ids || ids[i];
        w_rems := w_rems || (rems[i] - part);
        -- engine.Grant.settle_state
        w_states := w_states
            || CASE WHEN rems[i] - part + helds[i] > 0 THEN 'active' ELSE 'depleted' END;
        allocs := allocs || json_build_object('grant_id', ids[i], 'amount', trim_scale(part)::text);
        pb_allocs := pb_allocs || tollbooth_pb_field(8,
            tollbooth_pb_field(1, convert_to(ids[i], 'UTF8'), false)
            || tollbooth_pb_field(2, convert_to(trim_scale(part)::text, 'UTF8'), false), true);
    END LOOP;

    -- 5. The balance's figures (debits.plan_debit); a new depletion needs its notification,
    -- which the old path writes.
    balance_after := bal.balance - p_amount;
    v_depleted := bal.depleted;
    v_depletions := bal.depletions;
    IF balance_after > 0 THEN
        v_depleted := false;
    ELSIF NOT v_depleted THEN
        RAISE EXCEPTION 'tollbooth_debit: depleted' USING ERRCODE = 'TB001';
    END IF;

    -- 6. The response: billing.v1.CreditDebit, fields in number order (debits' debit_out).
    ep := extract(epoch FROM now_at);
    secs := floor(ep)::bigint;
    nanos := ((ep - secs) * 1000000000)::bigint;
    IF secs <> 0 THEN
        ts := ts || tollbooth_pb_varint(8) || tollbooth_pb_varint(secs);
    END IF;
    IF nanos <> 0 THEN
        ts := ts || tollbooth_pb_varint(16) || tollbooth_pb_varint(nanos);
    END IF;
    response := tollbooth_pb_field(1, convert_to(p_debit_id, 'UTF8'), false)
        || tollbooth_pb_field(2, convert_to(acct_id, 'UTF8'), false)
        || tollbooth_pb_field(3, convert_to(p_ctype, 'UTF8'), false)
        || tollbooth_pb_field(4, convert_to(trim_scale(p_amount)::text, 'UTF8'), false)
        || tollbooth_pb_field(5, convert_to(trim_scale(balance_after)::text, 'UTF8'), false)
        || tollbooth_pb_field(6, convert_to(p_reason, 'UTF8'), false)
        || tollbooth_pb_field(7, convert_to(p_key, 'UTF8'), false)
        || pb_allocs
        || tollbooth_pb_field(9, ts, true);

    -- 7. The writes (repository.write_debit's), then the stored response.
    UPDATE credit_grants AS t SET remaining = v.remaining, state = v.state
    FROM unnest(w_ids, w_rems, w_states) AS v(id, remaining, state)
    WHERE t.id = v.id AND t.billing_account_id = acct_id;
    UPDATE credit_balances
    SET balance = balance_after, seq = bal.seq + 1, depleted = v_depleted,
        depletions = v_depletions, updated_at = now_at
    WHERE billing_account_id = acct_id AND credit_type = p_ctype;
    INSERT INTO credit_ledger (id, billing_account_id, credit_type, seq, kind, amount,
        balance_after, grant_id, debit_id, reservation_id, reason, request_id, allocations,
        metadata, created_at)
    VALUES (p_entry_id, acct_id, p_ctype, bal.seq + 1, 'debit', -p_amount, balance_after,
        NULL, p_debit_id, NULL, p_reason, p_key, array_to_json(allocs), p_metadata, now_at);
    UPDATE idempotency_keys SET response = tollbooth_debit.response
    WHERE scope = p_scope AND key = p_key;
    outcome := 'debited';
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(VARINT)
    op.execute(FIELD)
    op.execute(DEBIT)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DROP FUNCTION IF EXISTS tollbooth_debit(text, text, text, timestamptz, boolean, text,"
        " text, text, numeric, text, json, timestamptz, text, text, int)"
    )
    op.execute("DROP FUNCTION IF EXISTS tollbooth_pb_field(int, bytea, boolean)")
    op.execute("DROP FUNCTION IF EXISTS tollbooth_pb_varint(bigint)")
