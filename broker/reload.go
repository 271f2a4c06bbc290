package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/actas/actas/policy"
	"github.com/actas/actas/storage"
)

// ReloadPolicy loads the policy file and swaps it in atomically. A file
// that does not parse or contradicts itself keeps the last good policy in
// force; the failure is logged, counted and audited. Reloading an
// unchanged file does nothing.
func (s *Server) ReloadPolicy(ctx context.Context, path string) error {
	p, err := policy.Load(path)
	if err != nil {
		s.metrics.ReloadFailures.Inc()
		s.log.Error("policy reload rejected; keeping the last good policy", "file", path, "err", err)
		ev := s.event(ctx, actor{Type: storage.ActorSystem, ID: "actas"}, "", "policy.reload", path, "failure",
			map[string]any{"error": err.Error(), "kept_sha256": s.policy.Load().SHA256})
		if aerr := s.store.AppendAudit(ctx, ev); aerr != nil {
			s.log.Error("audit: policy reload failure", "err", aerr)
		}
		return err
	}
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
// and Kubernetes ConfigMap symlink swaps, are seen too; bursts of events
// are coalesced.
func (s *Server) WatchPolicy(ctx context.Context, path string) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching policy: %w", err)
	}
	if err := w.Add(filepath.Dir(path)); err != nil {
		w.Close()
		return fmt.Errorf("watching policy: %w", err)
	}
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
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				timer.Reset(settle)
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
