package core

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

// usage counts active introspections per token and client for the current
// hour, so that introspection is audited as a summary, not per call: the
// first use of each token is recorded at once (MarkTokenUsed), then each
// hour's count per token and client.
type usage struct {
	mu     sync.Mutex
	hour   time.Time
	counts map[usageKey]*usageCount
	// unwritten are summary events a flush could not write; the next
	// flush writes them first.
	unwritten []storage.AuditEvent
}

type usageKey struct{ jti, client string }

type usageCount struct {
	tenant, grantID, sub, act, actIss string
	n                                 int64
}

// add counts one introspection at now.
func (u *usage) add(now time.Time, k usageKey, c usageCount) {
	hour := now.UTC().Truncate(time.Hour)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.counts == nil {
		u.counts, u.hour = map[usageKey]*usageCount{}, hour
	}
	if e, ok := u.counts[k]; ok {
		e.n++
		return
	}
	c.n = 1
	u.counts[k] = &c
}

// take returns the counts of a finished hour (or all counts when all is
// set, at shutdown) and starts a new window.
func (u *usage) take(now time.Time, all bool) (time.Time, map[usageKey]*usageCount) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.counts) == 0 || (!all && !now.UTC().Truncate(time.Hour).After(u.hour)) {
		return time.Time{}, nil
	}
	hour, counts := u.hour, u.counts
	u.counts, u.hour = map[usageKey]*usageCount{}, now.UTC().Truncate(time.Hour)
	return hour, counts
}

// usageBatch is how many summary events one transaction writes.
const usageBatch = 500

// FlushUsage writes the summary events of a finished hour (or everything
// counted so far when all is set, at shutdown), usageBatch to a
// transaction. What it cannot write is kept for the next flush, and the
// error says how many events wait.
func (s *Service) FlushUsage(ctx context.Context, all bool) error {
	hour, counts := s.usage.take(s.now(), all)
	s.usage.mu.Lock()
	evs := s.usage.unwritten
	s.usage.unwritten = nil
	s.usage.mu.Unlock()
	for k, c := range counts {
		evs = append(evs, s.event(audit.Actor{Type: storage.ActorClient, ID: k.client}, c.tenant, audit.TokenIntrospect, k.jti, audit.Success, map[string]any{
			"summary": true, "hour": hour.Format(time.RFC3339), "count": c.n,
			"sub": c.sub, "act": c.act, "act_iss": c.actIss, "grant_id": c.grantID,
		}))
	}
	for len(evs) > 0 {
		n := min(len(evs), usageBatch)
		if err := s.store.AppendAudit(ctx, evs[:n]...); err != nil {
			s.usage.mu.Lock()
			s.usage.unwritten = append(s.usage.unwritten, evs...)
			s.usage.mu.Unlock()
			s.log.ErrorContext(ctx, "audit: introspection summaries kept for the next flush", "events", len(evs), "err", err)
			return fmt.Errorf("%d introspection summary events not written: %w", len(evs), err)
		}
		evs = evs[n:]
	}
	return nil
}

// noteIntrospection audits an active introspection: the first use of a
// token at once, every use in the hourly summary. Failing to audit does not
// change the answer, which rests on the committed state only.
func (s *Service) noteIntrospection(ctx context.Context, clientID string, st *storage.TokenState) {
	now := s.now()
	g := &st.Grant
	s.usage.add(now, usageKey{st.Token.JTI, clientID}, usageCount{tenant: g.TenantID, grantID: g.ID, sub: g.GrantedBy, act: g.EngineerSub, actIss: g.EngineerIss})
	if !st.Token.FirstUsedAt.IsZero() {
		return
	}
	ev := s.event(audit.Actor{Type: storage.ActorClient, ID: clientID}, g.TenantID, audit.TokenIntrospect, st.Token.JTI, audit.Success, map[string]any{
		"first_use": true, "sub": g.GrantedBy, "act": g.EngineerSub, "act_iss": g.EngineerIss, "grant_id": g.ID,
	})
	if _, err := s.store.MarkTokenUsed(ctx, st.Token.JTI, now, ev); err != nil {
		s.log.ErrorContext(ctx, "audit: first introspection", "err", err)
	}
}
