package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/web"
	"github.com/actas/actas/storage"
)

// nav is the header every signed-in page shows.
type nav struct {
	Email, Tenant, Role, Active string
	Admin                       bool
}

func navOf(v *visitor, active string) nav {
	name := v.Email
	if name == "" {
		name = v.Sub
	}
	return nav{Email: name, Tenant: v.Tenant, Role: v.Role, Admin: v.Admin, Active: active}
}

// notices are the confirmations a redirect after a POST may show; the
// query names one, so no text of the request reaches the page.
var notices = map[string]string{
	"on":         "Support access is on. Tenant admins were told.",
	"off":        "Support access is off. Every grant ended, and the support team was signed out.",
	"saved":      "Support access settings saved.",
	"terminated": "The grant ended. The engineer's tokens stopped working at once.",
	"settings":   "Notification settings saved.",
}

type grantRow struct {
	ID, Role, Ticket, GrantedBy, Engineer, Status string
	Environments, Resources                       []string
	Created, Redeemed, LastUse, Expires           time.Time
	Live                                          bool
}

type homeView struct {
	Nav       nav
	Access    storage.Tenant
	Status    string // active or inactive
	Grants    []grantRow
	Notice    string
	CanGrant  bool
	MayToggle bool
	// Older links to the next page of grants; "" on the last.
	Older string
}

// home is the tenant's support access at a glance: the setting, the grants
// (active or inactive) with Terminate, and the live feed.
func (h *Handler) home(w http.ResponseWriter, r *http.Request, v *visitor) {
	status := r.URL.Query().Get("status")
	if status != "inactive" {
		status = "active"
	}
	t, err := h.core.Tenant(r.Context(), v.Tenant)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	gs, next, err := h.core.GrantsPage(r.Context(), v.Customer, status, 50, r.URL.Query().Get("cursor"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	used := h.core.GrantsLastUse(r.Context(), v.Customer, gs)
	now := h.core.Now()
	view := homeView{Nav: navOf(v, "home"), Access: t, Status: status, Notice: notices[r.URL.Query().Get("done")],
		CanGrant: t.SupportEnabled && (v.Admin || t.AllowNonAdminGrants), MayToggle: v.Admin}
	if next != "" {
		view.Older = "/ui/?" + url.Values{"status": {status}, "cursor": {next}}.Encode()
	}
	for _, g := range gs {
		row := grantRow{ID: g.ID, Role: g.Role, Ticket: g.Ticket, GrantedBy: g.GrantedBy, Environments: g.Environments,
			Resources: g.Resources, Created: g.CreatedAt, Redeemed: g.RedeemedAt, LastUse: used[g.ID], Expires: g.ExpiresAt,
			Status: strings.ReplaceAll(g.Status(now), "_", " ")}
		row.Live = g.RevokedAt.IsZero() && now.Before(g.ExpiresAt)
		if !g.RedeemedAt.IsZero() {
			row.Engineer = g.EngineerEmail
			if row.Engineer == "" {
				row.Engineer = g.EngineerSub
			}
		}
		view.Grants = append(view.Grants, row)
	}
	h.pages.Render(w, http.StatusOK, "home", view)
}

// toggle turns support access on or off (admins; the core refuses others).
func (h *Handler) toggle(w http.ResponseWriter, r *http.Request, v *visitor) {
	if err := web.ParseForm(w, r); err != nil {
		h.fail(w, r, err)
		return
	}
	enabled := r.PostForm.Get("enabled") == "true"
	allow := r.PostForm.Get("allow_non_admin_grants") == "on"
	prev, err := h.core.Tenant(r.Context(), v.Tenant)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if _, _, err := h.core.SetSupportAccess(r.Context(), v.Customer, enabled, &allow); err != nil {
		h.fail(w, r, err)
		return
	}
	done := "saved"
	if enabled != prev.SupportEnabled {
		done = map[bool]string{true: "on", false: "off"}[enabled]
	}
	http.Redirect(w, r, "/ui/?done="+done, http.StatusSeeOther)
}

// terminate ends one grant (idempotent).
func (h *Handler) terminate(w http.ResponseWriter, r *http.Request, v *visitor) {
	if err := h.core.Terminate(r.Context(), v.Customer, mux.Vars(r)["id"]); err != nil {
		h.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/?done=terminated", http.StatusSeeOther)
}

type option struct {
	Value, Label string
	Selected     bool
}

type giveView struct {
	Nav                      nav
	Roles, Expiries, Envs    []option
	Resources, Ticket, Error string
	DefaultTTL, MaxTTL       string
	EnvLimits                []string
	TicketRequired           []string
	CodeLength               int
	RedeemWithin             string
	SupportOff, NotAllowed   bool
	ExpiresIn, Role          string
	SelectedEnvs             []string
}

// expiryChoices are the offered lifetimes, within the policy's maximum.
var expiryChoices = []time.Duration{time.Hour, 4 * time.Hour, 8 * time.Hour, 24 * time.Hour, 72 * time.Hour,
	7 * 24 * time.Hour, 30 * 24 * time.Hour, 90 * 24 * time.Hour, 180 * 24 * time.Hour}

// human prints a duration as a policy writes it: 24h, 5d, 90m.
func human(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0 && d > 24*time.Hour:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	case d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/time.Minute)) + "m"
}

func (h *Handler) giveView(r *http.Request, v *visitor) giveView {
	pol := h.core.Policy()
	view := giveView{Nav: navOf(v, "give"), DefaultTTL: human(pol.DefaultTTL), MaxTTL: human(pol.MaxTTL),
		CodeLength: pol.Code.Length, RedeemWithin: human(pol.Code.RedeemWithin), Role: v.Role,
		ExpiresIn: strconv.Itoa(int(pol.DefaultTTL / time.Second))}
	if t, err := h.core.Tenant(r.Context(), v.Tenant); err == nil {
		view.SupportOff = !t.SupportEnabled
		view.NotAllowed = !v.Admin && !t.AllowNonAdminGrants
	}
	for _, role := range pol.Roles() {
		if pol.RoleAtMost(role.Name, v.Role) {
			view.Roles = append(view.Roles, option{Value: role.Name, Label: role.Name + " (" + strings.Join(pol.Scopes(role.Name), ", ") + ")"})
		}
	}
	for _, name := range pol.EnvironmentNames() {
		view.Envs = append(view.Envs, option{Value: name, Label: name})
		env, _ := pol.Environment(name)
		if env.MaxTTL > 0 {
			view.EnvLimits = append(view.EnvLimits, fmt.Sprintf("%s at most %s", name, human(env.MaxTTL)))
		}
		if env.RequireTicket {
			view.TicketRequired = append(view.TicketRequired, name)
		}
	}
	choices := slices.Clone(expiryChoices)
	if !slices.Contains(choices, pol.DefaultTTL) {
		choices = append(choices, pol.DefaultTTL)
		slices.Sort(choices)
	}
	for _, d := range choices {
		if d <= pol.MaxTTL {
			view.Expiries = append(view.Expiries, option{Value: strconv.Itoa(int(d / time.Second)), Label: human(d)})
		}
	}
	return view
}

// giveForm is "Give support access".
func (h *Handler) giveForm(w http.ResponseWriter, r *http.Request, v *visitor) {
	view := h.giveView(r, v)
	view.SelectedEnvs = nil
	h.renderGive(w, http.StatusOK, view)
}

func (h *Handler) renderGive(w http.ResponseWriter, status int, view giveView) {
	for i := range view.Roles {
		view.Roles[i].Selected = view.Roles[i].Value == view.Role
	}
	for i := range view.Expiries {
		view.Expiries[i].Selected = view.Expiries[i].Value == view.ExpiresIn
	}
	for i := range view.Envs {
		view.Envs[i].Selected = slices.Contains(view.SelectedEnvs, view.Envs[i].Value)
	}
	h.pages.Render(w, status, "give", view)
}

type codeView struct {
	Nav       nav
	Code      string
	RedeemBy  time.Time
	Grant     grantRow
	Awaiting  bool
	Tenant    string
	CodeGroup []string
}

// give creates a grant and shows its code, once: it is in this response
// and in no other.
func (h *Handler) give(w http.ResponseWriter, r *http.Request, v *visitor) {
	if err := web.ParseForm(w, r); err != nil {
		h.fail(w, r, err)
		return
	}
	f := r.PostForm
	view := h.giveView(r, v)
	view.Role, view.ExpiresIn, view.SelectedEnvs = f.Get("role"), f.Get("expires_in"), f["environments"]
	view.Resources, view.Ticket = f.Get("resources"), f.Get("ticket")
	req := core.GrantRequest{Role: view.Role, Environments: view.SelectedEnvs, Resources: strings.FieldsFunc(view.Resources, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t'
	}), Ticket: core.Ticket{ID: strings.TrimSpace(view.Ticket)}}
	if secs, err := strconv.ParseInt(view.ExpiresIn, 10, 64); err == nil {
		req.ExpiresIn = &secs
	} else {
		view.Error = "Choose when the access ends."
		h.renderGive(w, http.StatusUnprocessableEntity, view)
		return
	}
	g, code, err := h.core.CreateGrant(r.Context(), v.Customer, req)
	if err != nil {
		if ce := core.As(err); ce != nil && ce.Kind != core.KindUnavailable {
			view.Error = ce.Message
			h.renderGive(w, http.StatusUnprocessableEntity, view)
			return
		}
		h.fail(w, r, err)
		return
	}
	cv := codeView{Nav: navOf(v, "give"), Code: code, RedeemBy: g.CodeExpiresAt, Tenant: g.TenantID, Awaiting: g.Awaiting(),
		Grant: grantRow{ID: g.ID, Role: g.Role, Environments: g.Environments, Resources: g.Resources, Ticket: g.Ticket, Expires: g.ExpiresAt}}
	for i := 0; i < len(code); i += 3 {
		cv.CodeGroup = append(cv.CodeGroup, code[i:min(i+3, len(code))])
	}
	h.pages.Render(w, http.StatusCreated, "code", cv)
}

type eventRow struct {
	Time                                      time.Time
	ActorType, Actor, Action, Target, Outcome string
}

type activityView struct {
	Nav       nav
	ActorType string
	Types     []option
	Events    []eventRow
}

var actorTypes = []string{storage.ActorTenantAdmin, storage.ActorCustomerUser, storage.ActorSupportEngineer, storage.ActorClient, storage.ActorSystem}

// activity is the tenant's audit log, newest first, by actor type (admins).
func (h *Handler) activity(w http.ResponseWriter, r *http.Request, v *visitor) {
	at := r.URL.Query().Get("actor_type")
	evs, err := h.core.Audit(r.Context(), v.Customer, storage.AuditFilter{ActorType: at, Limit: 100})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	view := activityView{Nav: navOf(v, "activity"), ActorType: at, Types: []option{{Value: "", Label: "everyone", Selected: at == ""}}}
	for _, t := range actorTypes {
		view.Types = append(view.Types, option{Value: t, Label: strings.ReplaceAll(t, "_", " "), Selected: t == at})
	}
	for _, e := range evs {
		view.Events = append(view.Events, eventRow{Time: e.Time, ActorType: strings.ReplaceAll(e.ActorType, "_", " "), Actor: e.ActorID,
			Action: e.Action, Target: e.Target, Outcome: e.Outcome})
	}
	h.pages.Render(w, http.StatusOK, "activity", view)
}

type kindRow struct {
	Kind, Label             string
	Admins, Emails, Webhook bool
}

type settingsView struct {
	Nav                nav
	Emails, WebhookURL string
	Kinds              []kindRow
	Notice, Error      string
}

var kindLabels = map[string]string{
	storage.NotifyToggle:            "Support access turned on or off (admins always get it)",
	storage.NotifyLockout:           "Codes voided after too many failed attempts",
	storage.NotifyGrantCreated:      "Support access given",
	storage.NotifyGrantRedeemed:     "A grant redeemed by an engineer",
	storage.NotifyGrantTerminated:   "A grant ended",
	storage.NotifyGrantExpired:      "A grant expired",
	storage.NotifyApprovalRequested: "A grant waits for approval",
}

func settingsOf(n storage.NotificationSettings) settingsView {
	v := settingsView{Emails: strings.Join(n.Emails, "\n"), WebhookURL: n.WebhookURL}
	for _, k := range storage.NotifyKinds {
		v.Kinds = append(v.Kinds, kindRow{Kind: k, Label: kindLabels[k], Admins: slices.Contains(n.Kinds[storage.ToAdmins], k),
			Emails: slices.Contains(n.Kinds[storage.ToEmails], k), Webhook: slices.Contains(n.Kinds[storage.ToWebhook], k)})
	}
	return v
}

// settings shows who is told what (admins).
func (h *Handler) settings(w http.ResponseWriter, r *http.Request, v *visitor) {
	n, err := h.core.NotificationSettings(r.Context(), v.Customer)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	view := settingsOf(n)
	view.Nav, view.Notice = navOf(v, "settings"), notices[r.URL.Query().Get("done")]
	h.pages.Render(w, http.StatusOK, "settings", view)
}

// saveSettings stores the notification settings (admins).
func (h *Handler) saveSettings(w http.ResponseWriter, r *http.Request, v *visitor) {
	if err := web.ParseForm(w, r); err != nil {
		h.fail(w, r, err)
		return
	}
	f := r.PostForm
	emails := strings.Fields(strings.ReplaceAll(f.Get("emails"), ",", " "))
	kinds := map[string][]string{storage.ToAdmins: {}, storage.ToEmails: {}, storage.ToWebhook: {}}
	for _, k := range storage.NotifyKinds {
		for group := range kinds {
			if f.Get(group+":"+k) == "on" {
				kinds[group] = append(kinds[group], k)
			}
		}
	}
	webhook := strings.TrimSpace(f.Get("webhook_url"))
	if _, err := h.core.SetNotificationSettings(r.Context(), v.Customer, emails, webhook, kinds); err != nil {
		if ce := core.As(err); ce != nil && ce.Kind != core.KindUnavailable && ce.Kind != core.KindForbidden {
			view := settingsOf(storage.NotificationSettings{Emails: emails, WebhookURL: webhook, Kinds: kinds})
			view.Nav, view.Error = navOf(v, "settings"), ce.Message
			h.pages.Render(w, http.StatusUnprocessableEntity, "settings", view)
			return
		}
		h.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/settings?done=settings", http.StatusSeeOther)
}
