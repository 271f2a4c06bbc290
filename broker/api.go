package broker

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/actas/actas/config"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// customer is an authenticated customer user.
type customer struct {
	Sub, Iss, Tenant, Role, Email string
	Claims                        map[string]any
	Admin                         bool
}

func (c *customer) actor() actor {
	t := storage.ActorCustomerUser
	if c.Admin {
		t = storage.ActorTenantAdmin
	}
	return actor{Type: t, ID: c.Sub, Iss: c.Iss}
}

type apiHandler func(w http.ResponseWriter, r *http.Request, cu *customer)

func (s *Server) mountAPI(r *mux.Router) {
	r.Handle("/api/v1/tenants/{tenant}/support-access", s.api(s.getSupportAccess)).Methods(http.MethodGet)
	r.Handle("/api/v1/tenants/{tenant}/support-access", s.api(s.putSupportAccess)).Methods(http.MethodPut)
	r.Handle("/api/v1/tenants/{tenant}/grants", s.api(s.createGrant)).Methods(http.MethodPost)
	r.Handle("/api/v1/tenants/{tenant}/grants", s.api(s.listGrants)).Methods(http.MethodGet)
	r.Handle("/api/v1/tenants/{tenant}/grants/{id}", s.api(s.deleteGrant)).Methods(http.MethodDelete)
	r.Handle("/api/v1/tenants/{tenant}/audit", s.api(s.listAudit)).Methods(http.MethodGet)
	r.Handle("/api/v1/tenants/{tenant}/notifications", s.api(s.getNotifications)).Methods(http.MethodGet)
	r.Handle("/api/v1/tenants/{tenant}/notifications", s.api(s.putNotifications)).Methods(http.MethodPut)
}

// api authenticates the bearer token and requires the path's tenant to be
// the token's tenant.
func (s *Server) api(h apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cu, ae := s.authCustomer(r)
		if ae != nil {
			writeAPIError(w, *ae)
			return
		}
		if mux.Vars(r)["tenant"] != cu.Tenant {
			writeAPIError(w, apiErr(http.StatusForbidden, "forbidden", "your token is for another tenant"))
			return
		}
		h(w, r, cu)
	})
}

func (s *Server) authCustomer(r *http.Request) (*customer, *apiError) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return nil, &apiUnauthorized
	}
	ci := s.customers[unverifiedIssuer(tok)]
	if ci == nil {
		return nil, &apiUnauthorized
	}
	idt, cl, err := ci.up.verify(r.Context(), tok)
	if err != nil {
		if errors.Is(err, errUpstreamDown) {
			s.logger(r.Context()).Error("customer IdP unreachable", "issuer", ci.Issuer, "err", err)
			e := apiErr(http.StatusServiceUnavailable, "unavailable", "the customer identity provider is unreachable; try again")
			return nil, &e
		}
		s.logger(r.Context()).Info("customer token rejected", "err", err)
		return nil, &apiUnauthorized
	}
	cu := &customer{Sub: idt.Subject, Iss: idt.Issuer, Tenant: stringClaim(cl, ci.TenantClaim),
		Role: stringClaim(cl, ci.RoleClaim), Email: stringClaim(cl, "email"), Claims: cl}
	if !tenantRE.MatchString(cu.Tenant) || cu.Role == "" {
		e := apiErr(http.StatusUnauthorized, "unauthorized", fmt.Sprintf("the token lacks a valid %q or %q claim", ci.TenantClaim, ci.RoleClaim))
		return nil, &e
	}
	cu.Admin = s.policy.Load().IsGranter(cu.Role)
	if cu.Admin && cu.Email != "" {
		s.seeAdmin(r.Context(), cu)
	}
	return cu, nil
}

// seeAdmin records an admin's address from their own token (for
// notifications), at most once an hour per admin and address.
func (s *Server) seeAdmin(ctx context.Context, cu *customer) {
	if _, err := mail.ParseAddress(cu.Email); err != nil || len(cu.Email) > 254 {
		return
	}
	key := cu.Tenant + "\x00" + cu.Sub + "\x00" + cu.Email
	now := s.now()
	if last, ok := s.seenAdmins.Get(key); ok && now.Sub(last) < time.Hour {
		return
	}
	if err := s.store.SeeAdmin(ctx, cu.Tenant, cu.Sub, cu.Email, now); err != nil {
		s.logger(ctx).Warn("recording admin address", "err", err)
		return
	}
	s.seenAdmins.Put(key, now)
}

type supportAccessJSON struct {
	Enabled             bool       `json:"enabled"`
	AllowNonAdminGrants bool       `json:"allow_non_admin_grants"`
	ChangedBy           *string    `json:"changed_by"`
	ChangedAt           *time.Time `json:"changed_at"`
	RevokedGrants       *int       `json:"revoked_grants,omitempty"`
}

func toSupportAccess(t storage.Tenant) supportAccessJSON {
	out := supportAccessJSON{Enabled: t.SupportEnabled, AllowNonAdminGrants: t.AllowNonAdminGrants}
	if t.ChangedBy != "" {
		at := t.ChangedAt.UTC()
		out.ChangedBy, out.ChangedAt = &t.ChangedBy, &at
	}
	return out
}

// tenant reads a tenant; one never stored has support access off.
func (s *Server) tenant(ctx context.Context, id string) (storage.Tenant, *apiError) {
	t, err := s.store.Tenant(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Tenant{ID: id}, nil
	}
	if err != nil {
		s.logger(ctx).Error("api: storage", "err", err)
		return t, &apiUnavailable
	}
	return t, nil
}

func (s *Server) getSupportAccess(w http.ResponseWriter, r *http.Request, cu *customer) {
	t, ae := s.tenant(r.Context(), cu.Tenant)
	if ae != nil {
		writeAPIError(w, *ae)
		return
	}
	writeJSON(w, http.StatusOK, toSupportAccess(t))
}

func (s *Server) putSupportAccess(w http.ResponseWriter, r *http.Request, cu *customer) {
	if !cu.Admin {
		writeAPIError(w, apiErr(http.StatusForbidden, "forbidden", "only tenant admins may change support access"))
		return
	}
	var body struct {
		Enabled             *bool `json:"enabled"`
		AllowNonAdminGrants *bool `json:"allow_non_admin_grants"`
	}
	if ae := decodeJSON(r, &body); ae != nil {
		writeAPIError(w, *ae)
		return
	}
	if body.Enabled == nil {
		writeAPIError(w, apiErr(http.StatusBadRequest, "invalid_request", `field "enabled" is required`))
		return
	}
	ctx := r.Context()
	prev, ae := s.tenant(ctx, cu.Tenant)
	if ae != nil {
		writeAPIError(w, *ae)
		return
	}
	next := storage.Tenant{ID: cu.Tenant, SupportEnabled: *body.Enabled, AllowNonAdminGrants: prev.AllowNonAdminGrants,
		ChangedBy: cu.Sub, ChangedAt: s.now().UTC()}
	if body.AllowNonAdminGrants != nil {
		next.AllowNonAdminGrants = *body.AllowNonAdminGrants
	}
	action := "support_access.update"
	switch {
	case next.SupportEnabled && !prev.SupportEnabled:
		action = "support_access.enable"
	case !next.SupportEnabled && prev.SupportEnabled:
		action = "support_access.disable"
	}
	ev := s.event(ctx, cu.actor(), cu.Tenant, action, cu.Tenant, "success", map[string]any{
		"enabled": next.SupportEnabled, "allow_non_admin_grants": next.AllowNonAdminGrants,
		"previous": map[string]any{"enabled": prev.SupportEnabled, "allow_non_admin_grants": prev.AllowNonAdminGrants},
	})
	n, err := s.store.SetSupportAccess(ctx, next, ev)
	if err != nil {
		s.logger(ctx).Error("api: storage", "err", err)
		writeAPIError(w, apiUnavailable)
		return
	}
	out := toSupportAccess(next)
	if !next.SupportEnabled {
		out.RevokedGrants = &n
	}
	writeJSON(w, http.StatusOK, out)
}

type engineerJSON struct {
	Sub   string `json:"sub"`
	Iss   string `json:"iss"`
	Email string `json:"email,omitempty"`
}

type grantJSON struct {
	ID           string        `json:"id"`
	Role         string        `json:"role"`
	Environments []string      `json:"environments"`
	Resources    []string      `json:"resources"`
	Ticket       *ticketJSON   `json:"ticket"`
	GrantedBy    string        `json:"granted_by"`
	CreatedAt    time.Time     `json:"created_at"`
	ExpiresAt    time.Time     `json:"expires_at"`
	Status       string        `json:"status"`
	Engineer     *engineerJSON `json:"engineer,omitempty"`
	RedeemedAt   *time.Time    `json:"redeemed_at,omitempty"`
	RevokedAt    *time.Time    `json:"revoked_at,omitempty"`
	RevokedBy    string        `json:"revoked_by,omitempty"`
	RevokeReason string        `json:"revoke_reason,omitempty"`
}

func toGrantJSON(g storage.Grant, now time.Time) grantJSON {
	out := grantJSON{ID: g.ID, Role: g.Role, Environments: g.Environments, Resources: g.Resources,
		GrantedBy: g.GrantedBy, CreatedAt: g.CreatedAt.UTC(), ExpiresAt: g.ExpiresAt.UTC(), Status: g.Status(now),
		RevokedBy: g.RevokedBy, RevokeReason: g.RevokeReason}
	out.Ticket = toTicketJSON(g)
	if !g.RedeemedAt.IsZero() {
		at := g.RedeemedAt.UTC()
		out.RedeemedAt = &at
		out.Engineer = &engineerJSON{Sub: g.EngineerSub, Iss: g.EngineerIss, Email: g.EngineerEmail}
	}
	if !g.RevokedAt.IsZero() {
		at := g.RevokedAt.UTC()
		out.RevokedAt = &at
	}
	return out
}

// maxExpiresIn bounds expires_in before any arithmetic (ten years).
const maxExpiresIn = 10 * 365 * 24 * 3600

func (s *Server) createGrant(w http.ResponseWriter, r *http.Request, cu *customer) {
	var body struct {
		Role         string          `json:"role"`
		Environments []string        `json:"environments"`
		Resources    []string        `json:"resources"`
		ExpiresIn    *int64          `json:"expires_in"`
		ExpiresAt    *string         `json:"expires_at"`
		Ticket       json.RawMessage `json:"ticket"`
	}
	if ae := decodeJSON(r, &body); ae != nil {
		writeAPIError(w, *ae)
		return
	}
	bad := func(msg string) { writeAPIError(w, apiErr(http.StatusBadRequest, "invalid_request", msg)) }
	unproc := func(msg string) {
		writeAPIError(w, apiErr(http.StatusUnprocessableEntity, "invalid_grant_request", msg))
	}
	if body.Role == "" {
		bad(`field "role" is required`)
		return
	}
	ticket, msg := parseTicket(body.Ticket)
	if msg != "" {
		bad(msg)
		return
	}
	if body.ExpiresIn != nil && body.ExpiresAt != nil {
		bad(`give "expires_in" or "expires_at", not both`)
		return
	}
	now := s.now().UTC()
	var ttl time.Duration
	switch {
	case body.ExpiresIn != nil:
		if *body.ExpiresIn <= 0 || *body.ExpiresIn > maxExpiresIn {
			unproc(fmt.Sprintf("expires_in must be between 1 and %d seconds", maxExpiresIn))
			return
		}
		ttl = time.Duration(*body.ExpiresIn) * time.Second
	case body.ExpiresAt != nil:
		at, err := time.Parse(time.RFC3339, *body.ExpiresAt)
		if err != nil {
			bad(`"expires_at" must be an RFC 3339 time such as 2026-12-01T12:00:00Z`)
			return
		}
		if !at.After(now) || at.Sub(now) > maxExpiresIn*time.Second {
			unproc("expires_at must be in the future and within ten years")
			return
		}
		ttl = at.Sub(now)
	}
	ctx := r.Context()
	t, ae := s.tenant(ctx, cu.Tenant)
	if ae != nil {
		writeAPIError(w, *ae)
		return
	}
	if !t.SupportEnabled {
		writeAPIError(w, apiErr(http.StatusConflict, "support_access_disabled", "support access is turned off for this tenant; a tenant admin must enable it first"))
		return
	}
	pol := s.policy.Load()
	d, err := pol.DecideGrant(policy.GrantRequest{
		Granter: policy.Granter{Sub: cu.Sub, Role: cu.Role, Claims: cu.Claims},
		Tenant:  policy.Tenant{ID: t.ID, SupportAccess: t.SupportEnabled, AllowNonAdminGrants: t.AllowNonAdminGrants},
		Role:    body.Role, Environments: body.Environments, Resources: body.Resources, TTL: ttl,
		Ticket: ticket.ID, Tick: policy.Ticket{System: ticket.System, Severity: ticket.Severity}, Now: now,
	})
	var denied *policy.Denied
	var invalid *policy.Invalid
	switch {
	case errors.As(err, &denied):
		ev := s.event(ctx, cu.actor(), cu.Tenant, "grant.create", "", "denied", map[string]any{"rule": denied.Rule, "reason": denied.Reason, "role": body.Role})
		if err := s.store.AppendAudit(ctx, ev); err != nil {
			s.logger(ctx).Error("audit: writing denial", "err", err)
		}
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "denied", "message": denied.Reason, "rule": denied.Rule})
		return
	case errors.As(err, &invalid):
		unproc(invalid.Error())
		return
	case err != nil:
		s.logger(ctx).Error("grant decision", "err", err)
		writeAPIError(w, apiServer)
		return
	}
	claimsJSON, _ := json.Marshal(cu.Claims)
	g := storage.Grant{
		ID: "grt_" + randomToken(12), TenantID: cu.Tenant, Role: d.Role, Environments: d.Environments,
		Resources: nonNil(d.Resources), Ticket: ticket.ID, TicketSystem: ticket.System, TicketSeverity: ticket.Severity,
		GrantedBy: cu.Sub, GrantedByIss: cu.Iss,
		GranterRole: cu.Role, GranterClaims: claimsJSON, CreatedAt: now, ExpiresAt: d.ExpiresAt,
	}
	g.CodeExpiresAt = now.Add(pol.Code.RedeemWithin)
	if g.ExpiresAt.Before(g.CodeExpiresAt) {
		g.CodeExpiresAt = g.ExpiresAt
	}
	ev := s.event(ctx, cu.actor(), cu.Tenant, "grant.create", g.ID, "success", map[string]any{
		"role": g.Role, "environments": g.Environments, "resources": g.Resources, "ticket": toTicketJSON(g),
		"expires_at": g.ExpiresAt.Format(time.RFC3339), "code_expires_at": g.CodeExpiresAt.Format(time.RFC3339),
	})
	var code string
	for attempt := 0; ; attempt++ {
		code = newCode(pol.Code.Length)
		g.CodeHash = s.secrets.codeHash(cu.Tenant, code)
		err = s.store.CreateGrant(ctx, g, ev)
		if !errors.Is(err, storage.ErrAlreadyExists) || attempt == 8 {
			break
		}
	}
	switch {
	case errors.Is(err, storage.ErrSupportOff):
		writeAPIError(w, apiErr(http.StatusConflict, "support_access_disabled", "support access was turned off for this tenant"))
		return
	case err != nil:
		s.logger(ctx).Error("api: storage", "err", err)
		writeAPIError(w, apiUnavailable)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"grant": toGrantJSON(g, now), "code": code})
}

// ticketJSON is a grant's ticket as the API shows it.
type ticketJSON struct {
	ID       string `json:"id"`
	System   string `json:"system,omitempty"`
	Severity string `json:"severity,omitempty"`
}

func toTicketJSON(g storage.Grant) *ticketJSON {
	if g.Ticket == "" {
		return nil
	}
	return &ticketJSON{ID: g.Ticket, System: g.TicketSystem, Severity: g.TicketSeverity}
}

var (
	ticketIDRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:#/-]{0,127}$`)
	ticketSystemRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
)

// parseTicket accepts a bare id string or {"id", "system", "severity"},
// and returns a message for the client when it is malformed.
func parseTicket(raw json.RawMessage) (ticketJSON, string) {
	var t ticketJSON
	if len(raw) == 0 || string(raw) == "null" {
		return t, ""
	}
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &t.ID); err != nil {
			return t, `"ticket" must be a string or an object`
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&t); err != nil {
			return t, `"ticket" must be a string or {"id", "system", "severity"}`
		}
	}
	switch {
	case t.ID == "" && string(raw) == `""`:
		return ticketJSON{}, ""
	case !ticketIDRE.MatchString(t.ID):
		return t, "ticket id: letters, digits and . _ : # / -, at most 128 characters"
	case t.System != "" && !ticketSystemRE.MatchString(t.System):
		return t, "ticket system: lowercase letters, digits, - and _, at most 64 characters"
	case t.Severity != "" && !policy.IsSeverity(t.Severity):
		return t, "ticket severity must be S1, S2, S3 or S4"
	}
	return t, ""
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// newCode returns n uniformly random decimal digits from crypto/rand.
func newCode(n int) string {
	limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil)
	v, err := rand.Int(rand.Reader, limit)
	if err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return fmt.Sprintf("%0*d", n, v)
}

func (s *Server) listGrants(w http.ResponseWriter, r *http.Request, cu *customer) {
	q, ae := strictQuery(r, "status")
	if ae != nil {
		writeAPIError(w, *ae)
		return
	}
	status := q["status"]
	switch status {
	case "":
		status = "all"
	case "active", "inactive", "all":
	default:
		writeAPIError(w, apiErr(http.StatusBadRequest, "invalid_request", "status must be active, inactive or all"))
		return
	}
	f := storage.GrantFilter{TenantID: cu.Tenant, Status: status, Now: s.now()}
	if !cu.Admin {
		f.GrantedBy = cu.Sub
	}
	grants, err := s.store.Grants(r.Context(), f)
	if err != nil {
		s.logger(r.Context()).Error("api: storage", "err", err)
		writeAPIError(w, apiUnavailable)
		return
	}
	out := make([]grantJSON, 0, len(grants))
	for _, g := range grants {
		out = append(out, toGrantJSON(g, f.Now))
	}
	writeJSON(w, http.StatusOK, map[string]any{"grants": out})
}

func (s *Server) deleteGrant(w http.ResponseWriter, r *http.Request, cu *customer) {
	ctx := r.Context()
	id := mux.Vars(r)["id"]
	g, err := s.store.Grant(ctx, cu.Tenant, id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && !cu.Admin && g.GrantedBy != cu.Sub) {
		writeAPIError(w, apiNotFound) // another user's grant does not exist for a non-admin
		return
	}
	if err != nil {
		s.logger(ctx).Error("api: storage", "err", err)
		writeAPIError(w, apiUnavailable)
		return
	}
	ev := s.event(ctx, cu.actor(), cu.Tenant, "grant.revoke", g.ID, "success", map[string]any{
		"reason": "terminated", "sub": g.GrantedBy, "act": g.EngineerSub})
	if _, err := s.store.RevokeGrant(ctx, cu.Tenant, g.ID, s.now(), cu.Sub, "terminated", ev); err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.logger(ctx).Error("api: storage", "err", err)
		writeAPIError(w, apiUnavailable)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// strictQuery returns the query parameters, refusing unknown and repeated
// ones.
func strictQuery(r *http.Request, allowed ...string) (map[string]string, *apiError) {
	out := map[string]string{}
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		e := apiErr(http.StatusBadRequest, "invalid_request", "malformed query string")
		return nil, &e
	}
	for k, v := range vals {
		ok := false
		for _, a := range allowed {
			ok = ok || a == k
		}
		if !ok {
			e := apiErr(http.StatusBadRequest, "invalid_request", fmt.Sprintf("unknown query parameter %q", k))
			return nil, &e
		}
		if len(v) != 1 {
			e := apiErr(http.StatusBadRequest, "invalid_request", fmt.Sprintf("query parameter %q appears more than once", k))
			return nil, &e
		}
		out[k] = v[0]
	}
	return out, nil
}

var actionRE = regexp.MustCompile(`^[a-z_]{1,32}(\.[a-z_]{1,32}){0,3}$`)

type auditJSON struct {
	ID           int64           `json:"id"`
	Time         time.Time       `json:"time"`
	Tenant       string          `json:"tenant"`
	ActorType    string          `json:"actor_type"`
	ActorID      string          `json:"actor_id"`
	ActorIss     string          `json:"actor_iss,omitempty"`
	Action       string          `json:"action"`
	Target       string          `json:"target"`
	Outcome      string          `json:"outcome"`
	Detail       json.RawMessage `json:"detail"`
	PolicySHA256 string          `json:"policy_sha256"`
	Seq          int64           `json:"seq"`
	Hash         string          `json:"hash"`
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, cu *customer) {
	if !cu.Admin {
		writeAPIError(w, apiErr(http.StatusForbidden, "forbidden", "only tenant admins may read the audit log"))
		return
	}
	q, ae := strictQuery(r, "actor_type", "action", "since", "until", "limit", "cursor")
	if ae != nil {
		writeAPIError(w, *ae)
		return
	}
	bad := func(msg string) { writeAPIError(w, apiErr(http.StatusBadRequest, "invalid_request", msg)) }
	f := storage.AuditFilter{TenantID: cu.Tenant, ActorType: q["actor_type"], Action: q["action"], Limit: 100}
	switch f.ActorType {
	case "", storage.ActorTenantAdmin, storage.ActorCustomerUser, storage.ActorSupportEngineer, storage.ActorSystem, storage.ActorClient:
	default:
		bad("actor_type must be one of tenant_admin, customer_user, support_engineer, system, client")
		return
	}
	if f.Action != "" && !actionRE.MatchString(f.Action) {
		bad("action must look like grant.create")
		return
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q[name]; v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				bad(name + " must be an RFC 3339 time")
				return
			}
			*dst = t
		}
	}
	if v := q["limit"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			bad("limit must be between 1 and 500")
			return
		}
		f.Limit = n
	}
	if c := q["cursor"]; c != "" {
		id, ok := s.openCursor(cu.Tenant, c)
		if !ok {
			bad("cursor is invalid")
			return
		}
		f.BeforeID = id
	}
	evs, err := s.store.Audit(r.Context(), f)
	if err != nil {
		s.logger(r.Context()).Error("api: storage", "err", err)
		writeAPIError(w, apiUnavailable)
		return
	}
	out := make([]auditJSON, 0, len(evs))
	for _, e := range evs {
		out = append(out, auditJSON{ID: e.ID, Time: e.Time.UTC(), Tenant: e.TenantID, ActorType: e.ActorType, ActorID: e.ActorID,
			ActorIss: e.ActorIss, Action: e.Action, Target: e.Target, Outcome: e.Outcome, Detail: json.RawMessage(e.Detail),
			PolicySHA256: e.PolicySHA256, Seq: e.Seq, Hash: hex.EncodeToString(e.Hash)})
	}
	resp := map[string]any{"events": out}
	if len(evs) == f.Limit {
		resp["next_cursor"] = s.sealCursor(cu.Tenant, evs[len(evs)-1].ID)
	}
	writeJSON(w, http.StatusOK, resp)
}

// sealCursor makes an opaque, tenant-bound, tamper-proof page cursor.
func (s *Server) sealCursor(tenant string, id int64) string {
	b := binary.BigEndian.AppendUint64(nil, uint64(id))
	b = append(b, mac(s.secrets.cursor, tenant, strconv.FormatInt(id, 10))[:16]...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Server) openCursor(tenant, c string) (int64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 24 {
		return 0, false
	}
	id := int64(binary.BigEndian.Uint64(b[:8]))
	if id <= 0 || !hmac.Equal(b[8:], mac(s.secrets.cursor, tenant, strconv.FormatInt(id, 10))[:16]) {
		return 0, false
	}
	return id, true
}

type notificationsJSON struct {
	Emails     []string            `json:"emails"`
	WebhookURL string              `json:"webhook_url"`
	Kinds      map[string][]string `json:"kinds"` // "admins", "emails", "webhook" -> kinds
	ChangedBy  string              `json:"changed_by,omitempty"`
	ChangedAt  *time.Time          `json:"changed_at,omitempty"`
}

func (s *Server) getNotifications(w http.ResponseWriter, r *http.Request, cu *customer) {
	if !cu.Admin {
		writeAPIError(w, apiErr(http.StatusForbidden, "forbidden", "only tenant admins may read notification settings"))
		return
	}
	n, err := s.store.NotificationSettings(r.Context(), cu.Tenant)
	if err != nil {
		s.logger(r.Context()).Error("api: storage", "err", err)
		writeAPIError(w, apiUnavailable)
		return
	}
	out := notificationsJSON{Emails: n.Emails, WebhookURL: n.WebhookURL, Kinds: n.Kinds, ChangedBy: n.ChangedBy}
	if !n.ChangedAt.IsZero() {
		out.ChangedAt = &n.ChangedAt
	}
	writeJSON(w, http.StatusOK, out)
}

// putNotifications sets the tenant's extra addresses and webhook, and
// which kinds each group (admins, emails, webhook) receives. Toggles always
// reach every admin.
func (s *Server) putNotifications(w http.ResponseWriter, r *http.Request, cu *customer) {
	if !cu.Admin {
		writeAPIError(w, apiErr(http.StatusForbidden, "forbidden", "only tenant admins may change notification settings"))
		return
	}
	var body notificationsJSON
	if ae := decodeJSON(r, &body); ae != nil {
		writeAPIError(w, *ae)
		return
	}
	unproc := func(msg string) { writeAPIError(w, apiErr(http.StatusUnprocessableEntity, "invalid_settings", msg)) }
	if len(body.Emails) > 20 {
		unproc("at most 20 addresses")
		return
	}
	for _, e := range body.Emails {
		if a, err := mail.ParseAddress(e); err != nil || a.Address != e || len(e) > 254 {
			unproc(fmt.Sprintf("%q is not a plain email address", e))
			return
		}
	}
	if body.WebhookURL != "" {
		u, err := url.Parse(body.WebhookURL)
		if err != nil || u.Host == "" || !(u.Scheme == "https" || (u.Scheme == "http" && config.IsLoopback(u.Hostname()))) || len(body.WebhookURL) > 2048 {
			unproc("webhook_url must be an https URL")
			return
		}
	}
	kinds := map[string][]string{}
	for group, list := range body.Kinds {
		if group != storage.ToAdmins && group != storage.ToEmails && group != storage.ToWebhook {
			unproc(fmt.Sprintf("unknown recipient group %q (admins, emails, webhook)", group))
			return
		}
		kinds[group] = []string{}
		for _, k := range list {
			if !slices.Contains(storage.NotifyKinds, k) {
				unproc(fmt.Sprintf("unknown kind %q (kinds: %s)", k, strings.Join(storage.NotifyKinds, ", ")))
				return
			}
			if !slices.Contains(kinds[group], k) {
				kinds[group] = append(kinds[group], k)
			}
		}
	}
	if !slices.Contains(kinds[storage.ToAdmins], storage.NotifyToggle) {
		kinds[storage.ToAdmins] = append([]string{storage.NotifyToggle}, kinds[storage.ToAdmins]...) // always
	}
	n := storage.NotificationSettings{TenantID: cu.Tenant, Emails: nonNil(body.Emails), WebhookURL: body.WebhookURL, Kinds: kinds,
		ChangedBy: cu.Sub, ChangedAt: s.now().UTC()}
	ev := s.event(r.Context(), cu.actor(), cu.Tenant, "notifications.update", cu.Tenant, "success",
		map[string]any{"emails": n.Emails, "webhook_url": n.WebhookURL, "kinds": n.Kinds})
	if err := s.store.SetNotificationSettings(r.Context(), n, ev); err != nil {
		s.logger(r.Context()).Error("api: storage", "err", err)
		writeAPIError(w, apiUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, notificationsJSON{Emails: n.Emails, WebhookURL: n.WebhookURL, Kinds: n.Kinds, ChangedBy: n.ChangedBy, ChangedAt: &n.ChangedAt})
}
