package core

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

// ticketStatuses are the lifecycle statuses accepted from the ticket
// system; Solved and Closed end every grant bound to the ticket.
var ticketStatuses = map[string]bool{"New": false, "Open": false, "Awaiting reply": false, "Solved": true, "Closed": true}

// TicketChange is one authenticated status change from the ticket system.
type TicketChange struct {
	Tenant    string
	Ticket    Ticket
	Status    string
	ReplayKey []byte        // unique per call; a repeat changes nothing
	MaxAge    time.Duration // how long calls are accepted, so how long replay keys are kept
}

// TicketStatus records a ticket's status; Solved or Closed ends the
// ticket's live grants, audited as the ticket system. It returns the ended
// grants' IDs.
func (s *Service) TicketStatus(ctx context.Context, c TicketChange) ([]string, error) {
	end, known := ticketStatuses[c.Status]
	switch {
	case !TenantRE.MatchString(c.Tenant):
		return nil, fail(KindInvalid, "tenant is not a valid tenant identifier")
	case c.Ticket.ID == "":
		return nil, fail(KindInvalid, "ticket is required")
	case !known:
		return nil, fail(KindInvalid, "status must be one of New, Open, Awaiting reply, Solved, Closed")
	}
	who := audit.Actor{Type: storage.ActorSystem, ID: "ticket-hook"}
	if c.Ticket.System != "" {
		who.ID = c.Ticket.System
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	reason := "ticket_" + strings.ToLower(c.Status)
	now := s.now()
	ended, err := s.store.TicketUpdate(ctx, storage.TicketUpdate{
		TenantID: c.Tenant, TicketID: c.Ticket.ID, System: c.Ticket.System, End: end, Reason: reason,
		Now: now, ReplayKey: c.ReplayKey, ReplayUntil: now.Add(2 * c.MaxAge),
		Event: s.event(who, c.Tenant, audit.TicketStatus, c.Ticket.ID, audit.Success,
			map[string]any{"ticket": c.Ticket.ID, "system": c.Ticket.System, "status": c.Status}),
		GrantEvent: s.event(who, c.Tenant, audit.GrantRevoke, "", audit.Success,
			map[string]any{"reason": reason, "ticket": c.Ticket.ID, "system": c.Ticket.System}),
	})
	switch {
	case errors.Is(err, storage.ErrAlreadyExists):
		return nil, coded(KindConflict, "replayed", "this call was already received")
	case err != nil:
		return nil, unavailable(err)
	}
	return nonNil(ended), nil
}
