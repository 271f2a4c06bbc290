package core

import (
	"context"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

// RecordExpiries audits (and so notifies) grants that ran out, once each.
func (s *Service) RecordExpiries(ctx context.Context) {
	ev := s.event(audit.System, "", audit.GrantExpire, "", audit.Success, map[string]any{"reason": "expired"})
	for {
		n, err := s.store.RecordExpiries(ctx, s.now(), 100, ev)
		if err != nil {
			if ctx.Err() == nil {
				s.log.WarnContext(ctx, "recording grant expiries", "err", err)
			}
			return
		}
		if n < 100 {
			return
		}
	}
}

// MaybeRetain seals a checkpoint of every audit chain head and applies
// retention, once an hour. Only the maintenance loop calls it.
func (s *Service) MaybeRetain(ctx context.Context) {
	now := s.now()
	if now.Sub(s.lastRetention) < time.Hour {
		return
	}
	s.lastRetention = now
	sign := s.keys.KeySet().SignPayload
	if err := s.store.Checkpoint(ctx, now, sign); err != nil {
		s.log.WarnContext(ctx, "audit checkpoint", "err", err)
		return
	}
	r := s.cfg.Retention
	p := storage.PruneParams{Now: now, Sign: sign,
		EngineersBefore: now.Add(-r.EngineerRecords.Std()), ArchiveBefore: now.Add(-r.ArchiveGrantsAfter.Std())}
	if r.AuditEvents > 0 {
		p.AuditBefore = now.Add(-r.AuditEvents.Std())
	}
	res, err := s.store.Prune(ctx, p)
	if err != nil {
		s.log.WarnContext(ctx, "retention", "err", err)
		return
	}
	if res != (storage.PruneResult{}) {
		s.log.InfoContext(ctx, "retention applied", "audit_events", res.AuditEvents, "engineer_records", res.Engineers, "archived_grants", res.Archived)
	}
}
