package api

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/httpx"
	"github.com/actas/actas/storage"
)

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

func (h *Handler) getSupportAccess(r *http.Request, cu *core.Customer) (int, any, error) {
	t, err := h.core.Tenant(r.Context(), cu.Tenant)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, toSupportAccess(t), nil
}

func (h *Handler) putSupportAccess(r *http.Request, cu *core.Customer) (int, any, error) {
	var body struct {
		Enabled             *bool `json:"enabled"`
		AllowNonAdminGrants *bool `json:"allow_non_admin_grants"`
	}
	if be := httpx.DecodeJSON(r, &body); be != nil {
		return 0, nil, be
	}
	if body.Enabled == nil {
		return 0, nil, bad(`field "enabled" is required`)
	}
	t, n, err := h.core.SetSupportAccess(r.Context(), cu, *body.Enabled, body.AllowNonAdminGrants)
	if err != nil {
		return 0, nil, err
	}
	out := toSupportAccess(t)
	if !t.SupportEnabled {
		out.RevokedGrants = &n
	}
	return http.StatusOK, out, nil
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
	Ticket       *core.Ticket  `json:"ticket"`
	GrantedBy    string        `json:"granted_by"`
	CreatedAt    time.Time     `json:"created_at"`
	ExpiresAt    time.Time     `json:"expires_at"`
	Status       string        `json:"status"`
	Engineer     *engineerJSON `json:"engineer,omitempty"`
	RedeemedAt   *time.Time    `json:"redeemed_at,omitempty"`
	RevokedAt    *time.Time    `json:"revoked_at,omitempty"`
	RevokedBy    string        `json:"revoked_by,omitempty"`
	RevokeReason string        `json:"revoke_reason,omitempty"`
	Approval     *approvalJSON `json:"approval,omitempty"`
}

type approvalJSON struct {
	Rule       string     `json:"rule"`
	Approvers  int        `json:"approvers"`
	Deadline   time.Time  `json:"deadline"`
	ApprovedAt *time.Time `json:"approved_at,omitempty"`
}

func toGrantJSON(g storage.Grant, now time.Time) grantJSON {
	out := grantJSON{ID: g.ID, Role: g.Role, Environments: g.Environments, Resources: g.Resources,
		GrantedBy: g.GrantedBy, CreatedAt: g.CreatedAt.UTC(), ExpiresAt: g.ExpiresAt.UTC(), Status: g.Status(now),
		RevokedBy: g.RevokedBy, RevokeReason: g.RevokeReason, Ticket: core.GrantTicket(g)}
	if !g.RedeemedAt.IsZero() {
		at := g.RedeemedAt.UTC()
		out.RedeemedAt = &at
		out.Engineer = &engineerJSON{Sub: g.EngineerSub, Iss: g.EngineerIss, Email: g.EngineerEmail}
	}
	if !g.RevokedAt.IsZero() {
		at := g.RevokedAt.UTC()
		out.RevokedAt = &at
	}
	if g.ApprovalsNeeded > 0 {
		out.Approval = &approvalJSON{Rule: g.ApprovalRule, Approvers: g.ApprovalsNeeded, Deadline: g.ApprovalDeadline.UTC()}
		if !g.ApprovedAt.IsZero() {
			at := g.ApprovedAt.UTC()
			out.Approval.ApprovedAt = &at
		}
	}
	return out
}

func (h *Handler) createGrant(r *http.Request, cu *core.Customer) (int, any, error) {
	var body struct {
		Role         string          `json:"role"`
		Environments []string        `json:"environments"`
		Resources    []string        `json:"resources"`
		ExpiresIn    *int64          `json:"expires_in"`
		ExpiresAt    *string         `json:"expires_at"`
		Ticket       json.RawMessage `json:"ticket"`
	}
	if be := httpx.DecodeJSON(r, &body); be != nil {
		return 0, nil, be
	}
	if body.Role == "" {
		return 0, nil, bad(`field "role" is required`)
	}
	ticket, msg := core.ParseTicket(body.Ticket)
	if msg != "" {
		return 0, nil, bad(msg)
	}
	req := core.GrantRequest{Role: body.Role, Environments: body.Environments, Resources: body.Resources,
		ExpiresIn: body.ExpiresIn, Ticket: ticket}
	if body.ExpiresAt != nil {
		at, err := time.Parse(time.RFC3339, *body.ExpiresAt)
		if err != nil && body.ExpiresIn == nil {
			return 0, nil, bad(`"expires_at" must be an RFC 3339 time such as 2026-12-01T12:00:00Z`)
		}
		req.ExpiresAt = &at
	}
	g, code, err := h.core.CreateGrant(r.Context(), cu, req)
	if err != nil {
		return 0, nil, err
	}
	out := map[string]any{"grant": toGrantJSON(g, g.CreatedAt)}
	if code != "" { // none while the grant awaits approval
		out["code"] = code
	}
	return http.StatusCreated, out, nil
}

func (h *Handler) listGrants(r *http.Request, cu *core.Customer) (int, any, error) {
	q, err := strictQuery(r, "status", "limit", "cursor")
	if err != nil {
		return 0, nil, err
	}
	limit, err := pageLimit(q["limit"])
	if err != nil {
		return 0, nil, err
	}
	grants, next, err := h.core.GrantsPage(r.Context(), cu, q["status"], limit, q["cursor"])
	if err != nil {
		return 0, nil, err
	}
	now := h.core.Now()
	out := make([]grantJSON, 0, len(grants))
	for _, g := range grants {
		out = append(out, toGrantJSON(g, now))
	}
	resp := map[string]any{"grants": out}
	if next != "" {
		resp["next_cursor"] = next
	}
	return http.StatusOK, resp, nil
}

// pageLimit reads a page size: 1 to 500, 100 when absent.
func pageLimit(v string) (int, error) {
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 500 {
		return 0, bad("limit must be between 1 and 500")
	}
	return n, nil
}

func (h *Handler) getGrant(r *http.Request, cu *core.Customer) (int, any, error) {
	g, err := h.core.Grant(r.Context(), cu, mux.Vars(r)["id"])
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"grant": toGrantJSON(g, h.core.Now())}, nil
}

func (h *Handler) deleteGrant(r *http.Request, cu *core.Customer) (int, any, error) {
	if err := h.core.Terminate(r.Context(), cu, mux.Vars(r)["id"]); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// strictQuery returns the query parameters, refusing unknown and repeated
// ones.
func strictQuery(r *http.Request, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, bad("malformed query string")
	}
	for k, v := range vals {
		ok := false
		for _, a := range allowed {
			ok = ok || a == k
		}
		if !ok {
			return nil, bad(fmt.Sprintf("unknown query parameter %q", k))
		}
		if len(v) != 1 {
			return nil, bad(fmt.Sprintf("query parameter %q appears more than once", k))
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

func (h *Handler) listAudit(r *http.Request, cu *core.Customer) (int, any, error) {
	q, err := strictQuery(r, "actor_type", "action", "since", "until", "limit", "cursor")
	if err != nil {
		return 0, nil, err
	}
	f := storage.AuditFilter{ActorType: q["actor_type"], Action: q["action"], Limit: 100}
	if f.Action != "" && !actionRE.MatchString(f.Action) {
		return 0, nil, bad("action must look like grant.create")
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q[name]; v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return 0, nil, bad(name + " must be an RFC 3339 time")
			}
			*dst = t
		}
	}
	if f.Limit, err = pageLimit(q["limit"]); err != nil {
		return 0, nil, err
	}
	if c := q["cursor"]; c != "" {
		pos, ok := h.secrets.OpenCursor(cu.Tenant+"\x00audit", c)
		if !ok || len(pos) != 8 {
			return 0, nil, bad("cursor is invalid")
		}
		f.BeforeID = int64(binary.BigEndian.Uint64(pos))
	}
	evs, err := h.core.Audit(r.Context(), cu, f)
	if err != nil {
		return 0, nil, err
	}
	out := make([]auditJSON, 0, len(evs))
	for _, e := range evs {
		out = append(out, auditJSON{ID: e.ID, Time: e.Time.UTC(), Tenant: e.TenantID, ActorType: e.ActorType, ActorID: e.ActorID,
			ActorIss: e.ActorIss, Action: e.Action, Target: e.Target, Outcome: e.Outcome, Detail: json.RawMessage(e.Detail),
			PolicySHA256: e.PolicySHA256, Seq: e.Seq, Hash: hex.EncodeToString(e.Hash)})
	}
	resp := map[string]any{"events": out}
	if len(evs) == f.Limit {
		resp["next_cursor"] = h.secrets.SealCursor(cu.Tenant+"\x00audit", binary.BigEndian.AppendUint64(nil, uint64(evs[len(evs)-1].ID)))
	}
	return http.StatusOK, resp, nil
}

type notificationsJSON struct {
	Emails     []string            `json:"emails"`
	WebhookURL string              `json:"webhook_url"`
	Kinds      map[string][]string `json:"kinds"` // "admins", "emails", "webhook" -> kinds
	ChangedBy  string              `json:"changed_by,omitempty"`
	ChangedAt  *time.Time          `json:"changed_at,omitempty"`
}

func toNotificationsJSON(n storage.NotificationSettings) notificationsJSON {
	out := notificationsJSON{Emails: n.Emails, WebhookURL: n.WebhookURL, Kinds: n.Kinds, ChangedBy: n.ChangedBy}
	if !n.ChangedAt.IsZero() {
		out.ChangedAt = &n.ChangedAt
	}
	return out
}

func (h *Handler) getNotifications(r *http.Request, cu *core.Customer) (int, any, error) {
	n, err := h.core.NotificationSettings(r.Context(), cu)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, toNotificationsJSON(n), nil
}

func (h *Handler) putNotifications(r *http.Request, cu *core.Customer) (int, any, error) {
	var body notificationsJSON
	if be := httpx.DecodeJSON(r, &body); be != nil {
		return 0, nil, be
	}
	n, err := h.core.SetNotificationSettings(r.Context(), cu, body.Emails, body.WebhookURL, body.Kinds)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, toNotificationsJSON(n), nil
}
