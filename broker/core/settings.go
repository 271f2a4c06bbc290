package core

import (
	"context"
	"fmt"
	"net/mail"
	"net/url"
	"slices"
	"strings"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/config"
	"github.com/actas/actas/storage"
)

// NotificationSettings returns the tenant's settings; admins only.
func (s *Service) NotificationSettings(ctx context.Context, cu *Customer) (storage.NotificationSettings, error) {
	if !cu.Admin {
		return storage.NotificationSettings{}, coded(KindForbidden, "forbidden", "only tenant admins may read notification settings")
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	n, err := s.store.NotificationSettings(ctx, cu.Tenant)
	if err != nil {
		return n, unavailable(err)
	}
	return n, nil
}

func invalidSettings(format string, args ...any) *Error {
	return coded(KindUnprocessable, "invalid_settings", fmt.Sprintf(format, args...))
}

// SetNotificationSettings sets the tenant's extra addresses and webhook,
// and which kinds each group (admins, emails, webhook) receives; admins
// only. Toggles always reach every admin.
func (s *Service) SetNotificationSettings(ctx context.Context, cu *Customer, emails []string, webhook string, kinds map[string][]string) (storage.NotificationSettings, error) {
	if !cu.Admin {
		return storage.NotificationSettings{}, coded(KindForbidden, "forbidden", "only tenant admins may change notification settings")
	}
	if len(emails) > 20 {
		return storage.NotificationSettings{}, invalidSettings("at most 20 addresses")
	}
	for _, e := range emails {
		if a, err := mail.ParseAddress(e); err != nil || a.Address != e || len(e) > 254 {
			return storage.NotificationSettings{}, invalidSettings("%q is not a plain email address", e)
		}
	}
	if webhook != "" {
		u, err := url.Parse(webhook)
		if err != nil || u.Host == "" || !(u.Scheme == "https" || (u.Scheme == "http" && config.IsLoopback(u.Hostname()))) || len(webhook) > 2048 {
			return storage.NotificationSettings{}, invalidSettings("webhook_url must be an https URL")
		}
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if kinds == nil {
		// Absent means unchanged, never "nothing": keep what the tenant
		// receives now (the defaults if it never chose).
		cur, err := s.store.NotificationSettings(ctx, cu.Tenant)
		if err != nil {
			return cur, unavailable(err)
		}
		kinds = cur.Kinds
	}
	clean := map[string][]string{}
	for group, list := range kinds {
		if group != storage.ToAdmins && group != storage.ToEmails && group != storage.ToWebhook {
			return storage.NotificationSettings{}, invalidSettings("unknown recipient group %q (admins, emails, webhook)", group)
		}
		clean[group] = []string{}
		for _, k := range list {
			if !slices.Contains(storage.NotifyKinds, k) {
				return storage.NotificationSettings{}, invalidSettings("unknown kind %q (kinds: %s)", k, strings.Join(storage.NotifyKinds, ", "))
			}
			if !slices.Contains(clean[group], k) {
				clean[group] = append(clean[group], k)
			}
		}
	}
	if !slices.Contains(clean[storage.ToAdmins], storage.NotifyToggle) {
		clean[storage.ToAdmins] = append([]string{storage.NotifyToggle}, clean[storage.ToAdmins]...) // always
	}
	n := storage.NotificationSettings{TenantID: cu.Tenant, Emails: nonNil(emails), WebhookURL: webhook, Kinds: clean,
		ChangedBy: cu.Sub, ChangedAt: s.now().UTC()}
	ev := s.event(cu.Actor(), cu.Tenant, audit.NotificationsUpdate, cu.Tenant, audit.Success,
		map[string]any{"emails": n.Emails, "webhook_url": n.WebhookURL, "kinds": n.Kinds})
	if err := s.store.SetNotificationSettings(ctx, n, ev); err != nil {
		return n, unavailable(err)
	}
	return n, nil
}

// Audit lists the tenant's audit events, newest first; admins only. The
// filter's TenantID is the customer's.
func (s *Service) Audit(ctx context.Context, cu *Customer, f storage.AuditFilter) ([]storage.AuditEvent, error) {
	if !cu.Admin {
		return nil, coded(KindForbidden, "forbidden", "only tenant admins may read the audit log")
	}
	switch f.ActorType {
	case "", storage.ActorTenantAdmin, storage.ActorCustomerUser, storage.ActorSupportEngineer, storage.ActorSystem, storage.ActorClient:
	default:
		return nil, fail(KindInvalid, "actor_type must be one of tenant_admin, customer_user, support_engineer, system, client")
	}
	f.TenantID = cu.Tenant
	ctx, cancel := s.bound(ctx)
	defer cancel()
	evs, err := s.store.Audit(ctx, f)
	if err != nil {
		return nil, unavailable(err)
	}
	return evs, nil
}
