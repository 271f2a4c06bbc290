package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/actas/actas/storage"
)

// testStreams: streams belong to their client, at most max each; poll
// signals are held until acknowledged; a paused push stream holds its
// events in the outbox until enabled; deleting a stream drops what it held.
func testStreams(t *testing.T, s storage.Store) {
	ctx := context.Background()
	mk := func(id, client, method string) storage.Stream {
		return storage.Stream{ID: id, ClientID: client, Audience: client + "-aud", Method: method, EndpointURL: "https://x/" + id,
			EventsRequested: []string{}, Status: storage.StreamEnabled, CreatedAt: t0, UpdatedAt: t0}
	}
	if err := s.CreateStream(ctx, mk("poll-1", "a", storage.DeliveryPoll), 2); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateStream(ctx, mk("push-1", "a", storage.DeliveryPush), 2); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateStream(ctx, mk("push-2", "a", storage.DeliveryPush), 2); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("third stream of a client with max 2: %v", err)
	}
	if _, err := s.Stream(ctx, "b", "poll-1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("another client's stream: %v", err)
	}
	if l, err := s.Streams(ctx, "a"); err != nil || len(l) != 2 {
		t.Fatalf("list: %v %d", err, len(l))
	}
	for i, jti := range []string{"j1", "j2", "j3"} {
		if err := s.AddSignal(ctx, storage.Signal{Kind: storage.SignalVerification, JTI: jti, StreamID: "poll-1", Time: t0.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	got, more, err := s.PollSignals(ctx, "poll-1", nil, 2)
	if err != nil || len(got) != 2 || !more || got[0].JTI != "j1" {
		t.Fatalf("poll: %v %v %v", got, more, err)
	}
	got, more, _ = s.PollSignals(ctx, "poll-1", []string{"j1", "j2"}, 10)
	if len(got) != 1 || more || got[0].JTI != "j3" {
		t.Fatalf("poll after ack: %v %v", got, more)
	}

	// A paused push stream holds; enabling releases.
	p := mk("push-1", "a", storage.DeliveryPush)
	p.Status, p.UpdatedAt = storage.StreamPaused, t0
	if err := s.UpdateStream(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSignal(ctx, storage.Signal{Kind: storage.SignalVerification, JTI: "held", StreamID: "push-1", Time: t0}); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := s.ClaimOutbox(ctx, t0.Add(time.Hour), time.Minute, 10); len(msgs) != 0 {
		t.Fatalf("a paused stream's event was handed out: %v", msgs)
	}
	p.Status, p.UpdatedAt = storage.StreamEnabled, t0.Add(2*time.Hour)
	if err := s.UpdateStream(ctx, p); err != nil {
		t.Fatal(err)
	}
	msgs, _ := s.ClaimOutbox(ctx, t0.Add(2*time.Hour), time.Minute, 10)
	if len(msgs) != 1 || msgs[0].Channel != "ssf" || msgs[0].Destination != "push-1" {
		t.Fatalf("released events: %+v", msgs)
	}
	if err := s.DeleteStream(ctx, "b", "poll-1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("deleting another client's stream: %v", err)
	}
	if err := s.DeleteStream(ctx, "a", "poll-1"); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.PollSignals(ctx, "poll-1", nil, 10); len(got) != 0 {
		t.Fatalf("a deleted stream's events remain: %v", got)
	}
}
