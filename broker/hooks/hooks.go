package hooks

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/actas/actas/broker/api"
	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/httpx"
	"github.com/actas/actas/config"
)

// Handler serves the ticket hook.
type Handler struct {
	core *core.Service
	cfg  config.TicketHook
	log  *slog.Logger
}

// New returns the ticket hook for cfg.
func New(svc *core.Service, cfg config.TicketHook, log *slog.Logger) *Handler {
	return &Handler{core: svc, cfg: cfg, log: log}
}

// Mount adds POST /hooks/tickets when a hook secret is configured.
func (h *Handler) Mount(r *mux.Router) {
	if h.cfg.Secret == "" {
		return
	}
	r.HandleFunc("/hooks/tickets", h.tickets).Methods(http.MethodPost)
}

// tickets takes a ticket status change. The caller signs
// "<timestamp>.<body>" with HMAC-SHA256 under the shared secret and sends
// X-Actas-Timestamp (Unix seconds) and X-Actas-Signature (sha256=<hex>).
// A call outside max_age, with a bad signature, or seen before changes
// nothing.
func (h *Handler) tickets(w http.ResponseWriter, r *http.Request) {
	body, err := httpx.ReadBody(r)
	if errors.Is(err, httpx.ErrBodyTooLarge) {
		api.WriteError(w, httpx.ErrTooLarge.Status, httpx.ErrTooLarge.Code, httpx.ErrTooLarge.Message, "")
		return
	}
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, "invalid_request", "could not read the request body", "")
		return
	}
	sig, ok := h.authenticate(w, r, body)
	if !ok {
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
		api.WriteError(w, http.StatusBadRequest, "invalid_json", `want {"tenant", "ticket", "status"}`, "")
		return
	}
	t, problem := core.ParseTicket(msg.Ticket)
	if problem != "" && core.TenantRE.MatchString(msg.Tenant) {
		api.WriteError(w, http.StatusBadRequest, "invalid_request", problem, "")
		return
	}
	replay := sha256.Sum256(sig)
	ended, err := h.core.TicketStatus(r.Context(), core.TicketChange{
		Tenant: msg.Tenant, Ticket: t, Status: msg.Status, ReplayKey: replay[:], MaxAge: h.cfg.MaxAge.Std(),
	})
	if err != nil {
		api.Fail(w, r, h.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"ended_grants": ended})
}

// authenticate checks the timestamp window and the signature, answering
// 401 itself when either fails; it returns the signature's bytes.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request, body []byte) ([]byte, bool) {
	sig, err := checkSignature([]byte(h.cfg.Secret), r.Header.Get("X-Actas-Timestamp"), r.Header.Get("X-Actas-Signature"),
		body, h.core.Now(), h.cfg.MaxAge.Std())
	if err != nil {
		api.WriteError(w, http.StatusUnauthorized, "unauthorized", err.Error(), "")
		return nil, false
	}
	return sig, true
}

// checkSignature verifies X-Actas-Timestamp (Unix seconds, within maxAge
// of now) and X-Actas-Signature (sha256=<hex HMAC-SHA256 of
// "<timestamp>.<body>">) in constant time; it returns the signature bytes.
func checkSignature(secret []byte, tsText, sigHeader string, body []byte, now time.Time, maxAge time.Duration) ([]byte, error) {
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil || now.Sub(time.Unix(ts, 0)).Abs() > maxAge {
		return nil, errors.New("X-Actas-Timestamp is missing or outside the allowed window")
	}
	sig, ok := strings.CutPrefix(sigHeader, "sha256=")
	got, herr := hex.DecodeString(sig)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(tsText + "."))
	m.Write(body)
	if !ok || herr != nil || !hmac.Equal(got, m.Sum(nil)) {
		return nil, errors.New("X-Actas-Signature does not match")
	}
	return got, nil
}
