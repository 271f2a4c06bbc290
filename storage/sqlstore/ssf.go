package sqlstore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/actas/actas/storage"
)

// heldUntil is the next_attempt_at of a push event held for a paused stream.
const heldUntil = int64(1) << 62

const streamCols = `id, client_id, audience, method, endpoint_url, authorization_header, events_requested, description, status, reason, created_at, updated_at`

func scanStream(row scanner, st *storage.Stream) error {
	var events string
	var created, updated int64
	if err := row.Scan(&st.ID, &st.ClientID, &st.Audience, &st.Method, &st.EndpointURL, &st.AuthorizationHeader,
		&events, &st.Description, &st.Status, &st.Reason, &created, &updated); err != nil {
		return err
	}
	st.CreatedAt, st.UpdatedAt = fromMicro(created), fromMicro(updated)
	var err error
	st.EventsRequested, err = parseList(events)
	return err
}

// CreateStream stores a new stream, at most max per client.
func (s *Store) CreateStream(ctx context.Context, st storage.Stream, max int) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		var n int
		if err := s.queryRow(ctx, tx, `SELECT COUNT(*) FROM ssf_streams WHERE client_id = ?`, st.ClientID).Scan(&n); err != nil {
			return s.mapErr(err)
		}
		if n >= max {
			return storage.ErrConflict
		}
		_, err := s.exec(ctx, tx, `INSERT INTO ssf_streams (`+streamCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			st.ID, st.ClientID, st.Audience, st.Method, st.EndpointURL, st.AuthorizationHeader, jsonList(st.EventsRequested),
			st.Description, st.Status, st.Reason, micro(st.CreatedAt), micro(st.UpdatedAt))
		return err
	})
}

// Streams lists a client's streams, oldest first.
func (s *Store) Streams(ctx context.Context, clientID string) ([]storage.Stream, error) {
	rows, err := s.read.QueryxContext(ctx, s.read.Rebind(`SELECT `+streamCols+` FROM ssf_streams WHERE client_id = ? ORDER BY created_at, id`), clientID)
	if err != nil {
		return nil, s.mapErr(err)
	}
	defer rows.Close()
	out := []storage.Stream{}
	for rows.Next() {
		var st storage.Stream
		if err := scanStream(rows, &st); err != nil {
			return nil, s.mapErr(err)
		}
		out = append(out, st)
	}
	return out, s.mapErr(rows.Err())
}

// Stream returns one stream.
func (s *Store) Stream(ctx context.Context, clientID, id string) (storage.Stream, error) {
	var st storage.Stream
	err := scanStream(s.read.QueryRowxContext(ctx, s.read.Rebind(`SELECT `+streamCols+` FROM ssf_streams
		WHERE id = ? AND (client_id = ? OR ? = '')`), id, clientID, clientID), &st)
	return st, s.mapErr(err)
}

// UpdateStream replaces a stream's settings; enabling releases held events.
func (s *Store) UpdateStream(ctx context.Context, st storage.Stream) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `UPDATE ssf_streams SET endpoint_url = ?, authorization_header = ?, events_requested = ?,
			description = ?, status = ?, reason = ?, updated_at = ? WHERE id = ? AND client_id = ?`,
			st.EndpointURL, st.AuthorizationHeader, jsonList(st.EventsRequested), st.Description, st.Status, st.Reason,
			micro(st.UpdatedAt), st.ID, st.ClientID)
		if err != nil {
			return err
		}
		if n == 0 {
			return storage.ErrNotFound
		}
		if st.Status == storage.StreamEnabled {
			n, err := s.exec(ctx, tx, `UPDATE outbox SET next_attempt_at = ? WHERE channel = 'ssf' AND destination = ?
				AND delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at = ?`, micro(st.UpdatedAt), st.ID, heldUntil)
			if err != nil {
				return err
			}
			if n > 0 {
				s.queued(tx)
			}
		}
		return nil
	})
}

// DeleteStream removes a stream and what is held for it.
func (s *Store) DeleteStream(ctx context.Context, clientID, id string) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := s.exec(ctx, tx, `DELETE FROM ssf_streams WHERE id = ? AND client_id = ?`, id, clientID)
		if err != nil {
			return err
		}
		if n == 0 {
			return storage.ErrNotFound
		}
		if _, err := s.exec(ctx, tx, `DELETE FROM ssf_poll WHERE stream_id = ?`, id); err != nil {
			return err
		}
		_, err = s.exec(ctx, tx, `DELETE FROM outbox WHERE channel = 'ssf' AND destination = ? AND delivered_at IS NULL`, id)
		return err
	})
}

// AddSignal queues one signal for its stream.
func (s *Store) AddSignal(ctx context.Context, sig storage.Signal) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		st, err := s.txStream(ctx, tx, sig.StreamID)
		if err != nil {
			return err
		}
		return s.queueSignal(ctx, tx, st.Method, st.Status, sig)
	})
}

func (s *Store) txStream(ctx context.Context, tx *sqlx.Tx, id string) (storage.Stream, error) {
	var st storage.Stream
	err := scanStream(s.queryRow(ctx, tx, `SELECT `+streamCols+` FROM ssf_streams WHERE id = ?`, id), &st)
	return st, s.mapErr(err)
}

// queueSignal holds a signal for a poll stream, or queues a push in the
// outbox (held while the stream is paused). A disabled stream gets nothing.
func (s *Store) queueSignal(ctx context.Context, tx *sqlx.Tx, method, status string, sig storage.Signal) error {
	if status == storage.StreamDisabled {
		return nil
	}
	payload, err := json.Marshal(sig)
	if err != nil {
		return err
	}
	if method == storage.DeliveryPoll {
		_, err := s.exec(ctx, tx, `INSERT INTO ssf_poll (stream_id, jti, payload, created_at) VALUES (?, ?, ?, ?)`,
			sig.StreamID, sig.JTI, string(payload), micro(sig.Time))
		return err
	}
	next := micro(sig.Time)
	if status == storage.StreamPaused {
		next = heldUntil
	}
	_, err = s.exec(ctx, tx, `INSERT INTO outbox (tenant_id, kind, channel, destination, payload, next_attempt_at, created_at)
		VALUES (?, ?, 'ssf', ?, ?, ?, ?)`, sig.Tenant, sig.Kind, sig.StreamID, string(payload), next, micro(sig.Time))
	if err == nil && status == storage.StreamEnabled {
		s.queued(tx)
	}
	return err
}

// PollSignals acknowledges and reads a poll stream's held signals. Only
// acknowledgements take the writer; a long poll's repeated reads do not.
func (s *Store) PollSignals(ctx context.Context, streamID string, acks []string, max int) ([]storage.PolledSignal, bool, error) {
	if len(acks) > 0 {
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			for _, jti := range acks {
				if _, err := s.exec(ctx, tx, `DELETE FROM ssf_poll WHERE stream_id = ? AND jti = ?`, streamID, jti); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, false, err
		}
	}
	if max == 0 {
		return nil, false, nil
	}
	var rows []struct {
		JTI     string `db:"jti"`
		Payload string `db:"payload"`
	}
	if err := s.read.SelectContext(ctx, &rows, s.read.Rebind(`SELECT jti, payload FROM ssf_poll WHERE stream_id = ? ORDER BY id LIMIT ?`),
		streamID, max+1); err != nil {
		return nil, false, s.mapErr(err)
	}
	more := false
	if len(rows) > max {
		rows, more = rows[:max], true
	}
	out := make([]storage.PolledSignal, 0, len(rows))
	for _, r := range rows {
		out = append(out, storage.PolledSignal{JTI: r.JTI, Payload: []byte(r.Payload)})
	}
	return out, more, nil
}

// endedGrant is what a grant's end tells the products that hold its tokens.
type endedGrant struct {
	ID          string `db:"id"`
	Tenant      string `db:"tenant_id"`
	Sub         string `db:"granted_by"`
	SubIss      string `db:"granted_by_iss"`
	Act         string `db:"engineer_sub"`
	ActIss      string `db:"engineer_iss"`
	TokenJTI    string `db:"-"` // one token ended, not the grant
	TokenAudnce string `db:"-"`
}

// signalEnds queues a CAEP session-revoked, for each ended grant (or
// token), to every enabled or paused stream of every audience that holds
// its tokens: a product hears about the grants it saw, and no other. A
// deployment without streams pays one query, not one per grant.
func (s *Store) signalEnds(ctx context.Context, tx *sqlx.Tx, ended []endedGrant, at time.Time, reason, initiator string) error {
	if len(ended) == 0 {
		return nil
	}
	var live int
	if err := s.queryRow(ctx, tx, `SELECT COUNT(*) FROM (SELECT 1 FROM ssf_streams WHERE status <> 'disabled' LIMIT 1) x`).Scan(&live); err != nil {
		return s.mapErr(err)
	}
	for _, g := range ended {
		if live == 0 {
			break
		}
		if err := s.signal(ctx, tx, g, storage.Signal{Kind: storage.SignalSessionRevoked, Time: at, Reason: reason, Initiator: initiator}); err != nil {
			return err
		}
	}
	return nil
}

// signal queues tmpl, completed with g's subject, for the streams that
// saw g's tokens (or, for one token, that token's audience).
func (s *Store) signal(ctx context.Context, tx *sqlx.Tx, g endedGrant, tmpl storage.Signal) error {
	var streams []struct {
		ID       string `db:"id"`
		Audience string `db:"audience"`
		Method   string `db:"method"`
		Status   string `db:"status"`
		Events   string `db:"events_requested"`
	}
	q := `SELECT id, audience, method, status, events_requested FROM ssf_streams WHERE status <> 'disabled'
		AND audience IN (SELECT DISTINCT audience FROM tokens WHERE grant_id = ?) ORDER BY id`
	args := []any{g.ID}
	if g.TokenJTI != "" {
		q = `SELECT id, audience, method, status, events_requested FROM ssf_streams WHERE status <> 'disabled' AND audience = ? ORDER BY id`
		args = []any{g.TokenAudnce}
	}
	if err := tx.SelectContext(ctx, &streams, tx.Rebind(q), args...); err != nil {
		return s.mapErr(err)
	}
	for _, st := range streams {
		if ev, _ := parseList(st.Events); len(ev) > 0 && !containsEvent(ev, tmpl.Kind) {
			continue
		}
		sig := tmpl
		sig.JTI, sig.Audience, sig.StreamID = newJTI(), st.Audience, st.ID
		sig.Tenant, sig.CustomerIss, sig.CustomerSub, sig.EngineerIss, sig.EngineerSub = g.Tenant, g.SubIss, g.Sub, g.ActIss, g.Act
		sig.GrantID, sig.TokenJTI = g.ID, g.TokenJTI
		if err := s.queueSignal(ctx, tx, st.Method, st.Status, sig); err != nil {
			return err
		}
	}
	return nil
}

// containsEvent matches a requested event type URI or short name.
func containsEvent(requested []string, kind string) bool {
	for _, r := range requested {
		if r == kind || len(r) > len(kind) && r[len(r)-len(kind)-1:] == "/"+kind {
			return true
		}
	}
	return false
}

func newJTI() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
