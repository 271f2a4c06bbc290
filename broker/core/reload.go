package core

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/policy"
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

// WatchPolicy reloads the policy when its file changes, until ctx ends. It
// watches the directory, so editors that write a new file and rename it,
// and Kubernetes ConfigMap symlink swaps ("..data"), are seen too; events
// for any other file of the directory (a SQLite database beside the
// policy writes constantly) are ignored, and bursts are coalesced.
func (s *Service) WatchPolicy(ctx context.Context, path string) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching policy: %w", err)
	}
	if err := w.Add(filepath.Dir(path)); err != nil {
		w.Close()
		return fmt.Errorf("watching policy: %w", err)
	}
	base := filepath.Base(path)
	go func() {
		defer w.Close()
		const settle = 150 * time.Millisecond
		timer := time.NewTimer(settle)
		timer.Stop()
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if name := filepath.Base(ev.Name); name == base || strings.HasPrefix(name, "..") {
					timer.Reset(settle)
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				s.log.Warn("policy watcher", "err", err)
			case <-timer.C:
				s.ReloadPolicy(ctx, path)
			}
		}
	}()
	return nil
}

// SetPolicy swaps the policy in force atomically and audits it.
func (s *Service) SetPolicy(ctx context.Context, p *policy.Policy, source string) error {
	old := s.policy.Swap(p)
	ev := s.event(audit.System, "", audit.PolicyReload, source, audit.Success,
		map[string]any{"previous_sha256": old.SHA256, "sha256": p.SHA256})
	return s.store.AppendAudit(ctx, ev)
}
