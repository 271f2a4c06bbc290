package core

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/storage"
)

// FeedPoll is how often the live feed reads new audit events while anyone
// listens: the bound on the feed's delay, on any replica, since it reads
// the shared audit log rather than this process's memory.
const FeedPoll = 200 * time.Millisecond

// feedLookback re-reads this many ids below the last seen one: on
// PostgreSQL a transaction may commit after one that took a higher id.
const feedLookback = 64

// FeedItem is one event on a customer's grants as the live feed shows it.
type FeedItem struct {
	ID      int64     `json:"id"`
	Time    time.Time `json:"time"`
	GrantID string    `json:"grant_id"`
	Kind    string    `json:"kind"` // redeemed, signed_in, issued, first_use, refreshed, ended, expired
	Text    string    `json:"text"`
}

type feedSub struct {
	tenant, sub string
	ch          chan FeedItem
}

// feed fans the audit log out to the granting users who are watching.
type feed struct {
	svc  *Service
	mu   sync.Mutex
	subs map[*feedSub]struct{}
	wake chan struct{}
}

func newFeed(s *Service) *feed {
	return &feed{svc: s, subs: map[*feedSub]struct{}{}, wake: make(chan struct{}, 1)}
}

// Subscribe returns the live events on cu's own grants and a function
// that ends the subscription. A listener too slow to take an event misses
// it rather than holding the others back.
func (s *Service) Subscribe(cu *Customer) (<-chan FeedItem, func()) {
	f := s.feed
	sub := &feedSub{tenant: cu.Tenant, sub: cu.Sub, ch: make(chan FeedItem, 32)}
	f.mu.Lock()
	f.subs[sub] = struct{}{}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return sub.ch, func() {
		f.mu.Lock()
		delete(f.subs, sub)
		f.mu.Unlock()
	}
}

func (f *feed) listeners() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// RunFeed tails the audit log every FeedPoll while anyone listens, until
// ctx ends.
func (s *Service) RunFeed(ctx context.Context) {
	f := s.feed
	last := int64(-1)
	seen := map[int64]bool{}
	t := time.NewTicker(FeedPoll)
	defer t.Stop()
	for {
		if f.listeners() == 0 {
			last = -1 // a new listener wants what happens from then on
			clear(seen)
			select {
			case <-ctx.Done():
				return
			case <-f.wake:
			}
		}
		if last < 0 {
			id, err := s.store.LastAuditID(ctx)
			if err != nil {
				s.log.WarnContext(ctx, "live feed: reading the audit log", "err", err)
			} else {
				last = id
			}
		} else {
			last = f.poll(ctx, last, seen)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll reads and dispatches the events after last, and returns the new last.
func (f *feed) poll(ctx context.Context, last int64, seen map[int64]bool) int64 {
	evs, err := f.svc.store.AuditAfter(ctx, max(last-feedLookback, 0), 500)
	if err != nil {
		f.svc.log.WarnContext(ctx, "live feed: reading the audit log", "err", err)
		return last
	}
	for _, ev := range evs {
		if seen[ev.ID] {
			continue
		}
		seen[ev.ID] = true
		last = max(last, ev.ID)
		if it, sub, ok := feedItem(ev); ok {
			f.dispatch(ev.TenantID, sub, it)
		}
	}
	for id := range seen {
		if id <= last-feedLookback {
			delete(seen, id)
		}
	}
	return last
}

func (f *feed) dispatch(tenant, sub string, it FeedItem) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		if s.tenant == tenant && s.sub == sub {
			select {
			case s.ch <- it:
			default:
			}
		}
	}
}

// feedItem renders an audit event as a feed item for the granting user it
// concerns, if it is one the feed shows.
func feedItem(ev storage.AuditEvent) (FeedItem, string, bool) {
	var d struct {
		Sub      string `json:"sub"`
		Act      string `json:"act"`
		ActEmail string `json:"act_email"`
		GrantID  string `json:"grant_id"`
		ClientID string `json:"client_id"`
		Reason   string `json:"reason"`
		FirstUse bool   `json:"first_use"`
		Via      string `json:"via"`
	}
	if ev.Outcome != audit.Success || json.Unmarshal(ev.Detail, &d) != nil || d.Sub == "" {
		return FeedItem{}, "", false
	}
	it := FeedItem{ID: ev.ID, Time: ev.Time, GrantID: d.GrantID}
	engineer := d.ActEmail
	if engineer == "" {
		engineer = d.Act
	}
	switch ev.Action {
	case audit.GrantRedeem:
		it.Kind, it.Text, it.GrantID = "redeemed", "Redeemed by "+engineer, ev.Target
	case audit.TokenIssue:
		if d.Via == "authorization_code" {
			it.Kind, it.Text = "signed_in", engineer+" signed in to "+d.ClientID+" as you"
		} else {
			it.Kind, it.Text = "issued", "Token issued to "+engineer+" for "+d.ClientID
		}
	case audit.TokenIntrospect:
		if !d.FirstUse {
			return FeedItem{}, "", false
		}
		it.Kind, it.Text = "first_use", "First used at "+ev.ActorID
	case audit.TokenRefresh:
		it.Kind, it.Text = "refreshed", "Tokens refreshed by "+engineer
	case audit.GrantRevoke:
		who := ev.ActorID
		if ev.ActorType == storage.ActorSystem {
			who = "actas"
		}
		it.Kind, it.Text, it.GrantID = "ended", "Ended by "+who+" ("+d.Reason+")", ev.Target
	case audit.GrantExpire:
		it.Kind, it.Text, it.GrantID = "expired", "Expired", ev.Target
	default:
		return FeedItem{}, "", false
	}
	return it, d.Sub, true
}
