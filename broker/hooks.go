package broker

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/actas/actas/storage"
)

// Ticket lifecycle statuses accepted from the ticket system; Solved and
// Closed end every grant bound to the ticket.
var ticketStatuses = map[string]bool{"New": false, "Open": false, "Awaiting reply": false, "Solved": true, "Closed": true}

// mountHooks adds POST /hooks/tickets when ticket_hook is configured.
func (s *Server) mountHooks(r *mux.Router) {
	if s.cfg.TicketHook.Secret == "" {
		return
	}
	r.HandleFunc("/hooks/tickets", s.handleTicketHook).Methods(http.MethodPost)
}

// handleTicketHook takes a ticket status change. The caller signs
// "<timestamp>.<body>" with HMAC-SHA256 under the shared secret and sends
// X-Actas-Timestamp (Unix seconds) and X-Actas-Signature (sha256=<hex>).
// A call outside max_age, with a bad signature, or seen before changes
// nothing.
func (s *Server) handleTicketHook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	unauthorized := func(msg string) { writeAPIError(w, apiErr(http.StatusUnauthorized, "unauthorized", msg)) }
	body, err := readBody(r)
	if errors.Is(err, errBodyTooLarge) {
		writeAPIError(w, apiTooLarge)
		return
	}
	if err != nil {
		writeAPIError(w, apiErr(http.StatusBadRequest, "invalid_request", "could not read the request body"))
		return
	}
	tsText := r.Header.Get("X-Actas-Timestamp")
	ts, err := strconv.ParseInt(tsText, 10, 64)
	now := s.now()
	maxAge := s.cfg.TicketHook.MaxAge.Std()
	if err != nil || now.Sub(time.Unix(ts, 0)).Abs() > maxAge {
		unauthorized("X-Actas-Timestamp is missing or outside the allowed window")
		return
	}
	sig, ok := strings.CutPrefix(r.Header.Get("X-Actas-Signature"), "sha256=")
	got, herr := hex.DecodeString(sig)
	m := hmac.New(sha256.New, []byte(s.cfg.TicketHook.Secret))
	m.Write([]byte(tsText + "."))
	m.Write(body)
	if !ok || herr != nil || !hmac.Equal(got, m.Sum(nil)) {
		unauthorized("X-Actas-Signature does not match")
		return
	}

	var msg struct {
		Tenant string          `json:"tenant"`
		Ticket json.RawMessage `json:"ticket"`
		Status string          `json:"status"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&msg); err != nil {
		writeAPIError(w, apiErr(http.StatusBadRequest, "invalid_json", `want {"tenant", "ticket", "status"}`))
		return
	}
	t, problem := parseTicket(msg.Ticket)
	end, known := ticketStatuses[msg.Status]
	switch {
	case !tenantRE.MatchString(msg.Tenant):
		problem = "tenant is not a valid tenant identifier"
	case problem == "" && t.ID == "":
		problem = "ticket is required"
	case problem == "" && !known:
		problem = "status must be one of New, Open, Awaiting reply, Solved, Closed"
	}
	if problem != "" {
		writeAPIError(w, apiErr(http.StatusBadRequest, "invalid_request", problem))
		return
	}
	who := actor{Type: storage.ActorSystem, ID: "ticket-hook"}
	if t.System != "" {
		who.ID = t.System
	}
	reason := "ticket_" + strings.ToLower(msg.Status)
	replay := sha256.Sum256(got)
	ended, err := s.store.TicketUpdate(ctx, storage.TicketUpdate{
		TenantID: msg.Tenant, TicketID: t.ID, System: t.System, End: end, Reason: reason,
		Now: now, ReplayKey: replay[:], ReplayUntil: now.Add(2 * maxAge),
		Event: s.event(ctx, who, msg.Tenant, "ticket.status", t.ID, "success",
			map[string]any{"ticket": t.ID, "system": t.System, "status": msg.Status}),
		GrantEvent: s.event(ctx, who, msg.Tenant, "grant.revoke", "", "success",
			map[string]any{"reason": reason, "ticket": t.ID, "system": t.System}),
	})
	switch {
	case errors.Is(err, storage.ErrAlreadyExists):
		writeAPIError(w, apiErr(http.StatusConflict, "replayed", "this call was already received"))
		return
	case err != nil:
		s.logger(ctx).Error("ticket hook: storage", "err", err)
		writeAPIError(w, apiUnavailable)
		return
	}
	if ended == nil {
		ended = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"ended_grants": ended})
}
