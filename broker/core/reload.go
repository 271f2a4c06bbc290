package core

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// ReloadPolicy loads the policy file and swaps it in atomically. A file
// that does not parse or contradicts itself keeps the last good policy in
// force; the failure is logged, counted and audited. Reloading an
// unchanged file does nothing.
//
// The same bad content is logged, counted and audited once, however often
// it is reloaded (by the watcher or SIGHUP); a new bad edit is reported
// again.
func (s *Service) ReloadPolicy(ctx context.Context, path string) error {
	data, err := policy.ReadFile(path)
	var p *policy.Policy
	if err == nil {
		p, err = policy.Parse(path, data)
	}
	if err != nil {
		sum := sha256.Sum256(data)
		bad := hex.EncodeToString(sum[:])
		s.reloadMu.Lock()
		seen := s.lastBadPolicy == bad
		s.lastBadPolicy = bad
		s.reloadMu.Unlock()
		if seen {
			return err
		}
		if s.reloadErr != nil {
			s.reloadErr.Inc()
		}
		s.log.Error("policy reload rejected; keeping the last good policy", "file", path, "err", err)
		s.appendAudit(ctx, s.event(audit.System, "", audit.PolicyReload, path, audit.Failure,
			map[string]any{"error": err.Error(), "kept_sha256": s.policy.Load().SHA256, "rejected_sha256": bad}))
		return err
	}
	s.reloadMu.Lock()
	s.lastBadPolicy = ""
	s.reloadMu.Unlock()
	if p.SHA256 == s.policy.Load().SHA256 {
		return nil
	}
	if err := s.SetPolicy(ctx, p, path); err != nil {
		s.log.Error("audit: policy reload", "err", err)
	}
	s.log.Info("policy reloaded", "file", path, "sha256", p.SHA256)
	return nil
}

// WatchPolicy reloads the policy when its file changes, until ctx ends.
// Once a second it compares what stat reports of the path, following
// symlinks: the file's device and inode, size and modification time. An
// edit in place changes the time, and an editor that writes a new file and
// renames it, or a Kubernetes ConfigMap's symlink swap ("..data"), changes
// the inode. A change is reloaded once it has held still for a look.
//
// It polls instead of asking inotify because a watch on the policy's
// directory wakes the server for every write there, and a SQLite database
// beside the policy writes with every change it stores: that was 4% of
// the CPU of a token exchange.
func (s *Service) WatchPolicy(ctx context.Context, path string) error {
	last, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("watching policy: %w", err)
	}
	go func() {
		t := time.NewTicker(policyPoll)
		defer t.Stop()
		var missing, pending bool
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			fi, err := os.Stat(path)
			switch {
			case err != nil:
				if !missing {
					s.log.Warn("policy watcher: keeping the policy in force", "err", err)
				}
				missing = true
			case !sameFile(last, fi):
				last, missing, pending = fi, false, true // reloaded once it holds still
			case pending:
				pending = false
				s.ReloadPolicy(ctx, path)
			}
		}
	}()
	return nil
}

// policyPoll is how often WatchPolicy looks at the policy file.
const policyPoll = time.Second

func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// SetPolicy swaps the policy in force atomically and audits it.
func (s *Service) SetPolicy(ctx context.Context, p *policy.Policy, source string) error {
	old := s.policy.Swap(p)
	ev := s.event(audit.System, "", audit.PolicyReload, source, audit.Success,
		map[string]any{"previous_sha256": old.SHA256, "sha256": p.SHA256})
	if err := s.store.AppendAudit(ctx, ev); err != nil {
		return err
	}
	if old != nil {
		s.signalPolicyChange(ctx, old, p)
	}
	return nil
}

// signalPolicyChange tells products what a new policy did to live tokens:
// a token it now refuses gets a session-revoked (for that token: it is
// inactive at introspection from now on, and a product that verifies
// locally must stop honouring it too), a token whose scope it narrowed a
// token-claims-change (the engineer refreshes for a narrower one). Tokens
// the old policy already refused are not signalled again.
func (s *Service) signalPolicyChange(ctx context.Context, old, p *policy.Policy) {
	now := s.now()
	after := ""
	for {
		page, err := s.store.LiveTokens(ctx, now, after, 500)
		if err != nil {
			s.log.WarnContext(ctx, "policy change: reading live tokens", "err", err)
			return
		}
		for i := range page {
			st := &page[i]
			after = st.Token.JTI
			if !st.TenantEnabled {
				continue
			}
			eng, ig, err := decisionInputs(&st.Grant, policy.Tenant{ID: st.Grant.TenantID, SupportAccess: true, AllowNonAdminGrants: st.AllowNonAdminGrants}, true)
			if err != nil {
				continue
			}
			t := &st.Token
			if old.StillAllows(eng, ig, t.Role, now) != nil {
				continue
			}
			kind, reason, claims := "", "", map[string]any(nil)
			var pd *policy.Denied
			if err := p.StillAllows(eng, ig, t.Role, now); errors.As(err, &pd) {
				kind, reason = storage.SignalSessionRevoked, "policy: "+pd.Reason
			} else if err != nil {
				kind, reason = storage.SignalSessionRevoked, "policy: "+err.Error()
			} else if wide, narrow := narrowScope(t.Scope, old.Scopes(t.Role)), narrowScope(t.Scope, p.Scopes(t.Role)); wide != narrow {
				kind, reason, claims = storage.SignalClaimsChange, "policy narrowed the scope", map[string]any{"scope": narrow, "roles": []string{t.Role}}
			}
			if kind == "" {
				continue
			}
			if err := s.store.SignalToken(ctx, t.JTI, kind, reason, claims, now); err != nil {
				s.log.WarnContext(ctx, "policy change: signalling a token", "jti", t.JTI, "err", err)
			}
		}
		if len(page) < 500 {
			return
		}
	}
}
