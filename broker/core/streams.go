package core

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"time"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/broker/signals"
	"github.com/actas/actas/storage"
)

// Shared Signals stream management, for products (clients with a secret).
const (
	ScopeSSF        = "ssf"
	BearerTTL       = time.Hour
	MaxStreams      = 10 // per client
	MaxPollEvents   = 100
	streamIDPrefix  = "ssf_"
	maxStreamFields = 2048
)

// IssueBearer makes the bearer token a client manages its streams with
// (client_credentials, scope ssf).
func (s *Service) IssueBearer(clientID string) (string, int64) {
	return s.secrets.SealBearer(clientID, ScopeSSF, s.now().Add(BearerTTL)), int64(BearerTTL / time.Second)
}

// BearerClient is the client of a valid, unexpired bearer token.
func (s *Service) BearerClient(token string) (string, bool) {
	return s.secrets.OpenBearer(token, ScopeSSF, s.now())
}

// StreamConfig is what a receiver asks for (SSF 1.0 §8.1.1).
type StreamConfig struct {
	Method              string
	EndpointURL         string // push only
	AuthorizationHeader string // push only
	EventsRequested     []string
	Description         string
}

var errNoStream = fail(KindNotFound, "no such stream")

func (s *Service) checkStream(c StreamConfig) error {
	switch c.Method {
	case storage.DeliveryPush:
		u, err := url.Parse(c.EndpointURL)
		if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" ||
			!(u.Scheme == "https" || (u.Scheme == "http" && s.cfg.Notifications.AllowLoopbackWebhooks)) {
			return fail(KindInvalid, "delivery.endpoint_url must be an absolute https URL")
		}
	case storage.DeliveryPoll:
		if c.EndpointURL != "" || c.AuthorizationHeader != "" {
			return fail(KindInvalid, "a poll stream's endpoint_url is assigned by the transmitter")
		}
	default:
		return fail(KindInvalid, "delivery.method must be "+storage.DeliveryPush+" or "+storage.DeliveryPoll)
	}
	if len(c.EndpointURL)+len(c.AuthorizationHeader)+len(c.Description) > maxStreamFields || len(c.EventsRequested) > 16 {
		return fail(KindInvalid, "the stream configuration is too large")
	}
	return nil
}

// Delivered is the events a stream requested that actas supports.
func Delivered(requested []string) []string {
	out := []string{}
	for _, e := range requested {
		if slices.Contains(signals.Supported, e) && !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out
}

// CreateStream creates a stream for a client whose tokens carry audience.
func (s *Service) CreateStream(ctx context.Context, clientID, audience string, c StreamConfig) (storage.Stream, error) {
	if err := s.checkStream(c); err != nil {
		return storage.Stream{}, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	now := s.now()
	st := storage.Stream{ID: streamIDPrefix + randomToken(12), ClientID: clientID, Audience: audience, Method: c.Method,
		EndpointURL: c.EndpointURL, AuthorizationHeader: c.AuthorizationHeader, EventsRequested: c.EventsRequested,
		Description: c.Description, Status: storage.StreamEnabled, CreatedAt: now, UpdatedAt: now}
	if st.EventsRequested == nil {
		st.EventsRequested = []string{}
	}
	if st.Method == storage.DeliveryPoll {
		st.EndpointURL = s.cfg.Issuer + "/ssf/poll/" + st.ID
	}
	switch err := s.store.CreateStream(ctx, st, MaxStreams); {
	case errors.Is(err, storage.ErrConflict):
		return st, failf(KindConflict, "a client may have at most %d streams", MaxStreams)
	case err != nil:
		return st, unavailable(err)
	}
	s.appendAudit(ctx, s.event(audit.Actor{Type: storage.ActorClient, ID: clientID}, "", audit.StreamCreate, st.ID, audit.Success,
		map[string]any{"method": st.Method, "events_requested": st.EventsRequested}))
	return st, nil
}

// Streams lists a client's streams.
func (s *Service) Streams(ctx context.Context, clientID string) ([]storage.Stream, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := s.store.Streams(ctx, clientID)
	if err != nil {
		return nil, unavailable(err)
	}
	return out, nil
}

// Stream is one of a client's streams; another client's is not found.
func (s *Service) Stream(ctx context.Context, clientID, id string) (storage.Stream, error) {
	if clientID == "" {
		return storage.Stream{}, errNoStream // "" means any client to storage, never here
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	st, err := s.store.Stream(ctx, clientID, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return st, errNoStream
	case err != nil:
		return st, unavailable(err)
	}
	return st, nil
}

// UpdateStream applies change to a client's stream and stores it; change
// may alter the receiver-supplied fields and the status.
func (s *Service) UpdateStream(ctx context.Context, clientID, id string, change func(*storage.Stream) error) (storage.Stream, error) {
	st, err := s.Stream(ctx, clientID, id)
	if err != nil {
		return st, err
	}
	method := st.Method
	if err := change(&st); err != nil {
		return st, err
	}
	if st.Method != method {
		return st, fail(KindInvalid, "a stream's delivery method cannot change; create another stream")
	}
	c := StreamConfig{Method: st.Method, EndpointURL: st.EndpointURL, AuthorizationHeader: st.AuthorizationHeader,
		EventsRequested: st.EventsRequested, Description: st.Description}
	if st.Method == storage.DeliveryPoll {
		c.EndpointURL = ""
	}
	if err := s.checkStream(c); err != nil {
		return st, err
	}
	if !slices.Contains([]string{storage.StreamEnabled, storage.StreamPaused, storage.StreamDisabled}, st.Status) {
		return st, fail(KindInvalid, "status must be enabled, paused or disabled")
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	st.UpdatedAt = s.now()
	if err := s.store.UpdateStream(ctx, st); errors.Is(err, storage.ErrNotFound) {
		return st, errNoStream
	} else if err != nil {
		return st, unavailable(err)
	}
	s.appendAudit(ctx, s.event(audit.Actor{Type: storage.ActorClient, ID: clientID}, "", audit.StreamUpdate, st.ID, audit.Success,
		map[string]any{"status": st.Status, "events_requested": st.EventsRequested}))
	return st, nil
}

// DeleteStream removes a client's stream and what is held for it.
func (s *Service) DeleteStream(ctx context.Context, clientID, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	switch err := s.store.DeleteStream(ctx, clientID, id); {
	case errors.Is(err, storage.ErrNotFound):
		return errNoStream
	case err != nil:
		return unavailable(err)
	}
	s.appendAudit(ctx, s.event(audit.Actor{Type: storage.ActorClient, ID: clientID}, "", audit.StreamDelete, id, audit.Success, nil))
	return nil
}

// VerifyStream sends a verification event with state (SSF 1.0 §8.1.4).
func (s *Service) VerifyStream(ctx context.Context, clientID, id, state string) error {
	st, err := s.Stream(ctx, clientID, id)
	if err != nil {
		return err
	}
	if len(state) > 256 {
		return fail(KindInvalid, "state is longer than 256 bytes")
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	sig := storage.Signal{Kind: storage.SignalVerification, JTI: randomToken(16), Time: s.now(), Audience: st.Audience, StreamID: st.ID, State: state}
	if err := s.store.AddSignal(ctx, sig); err != nil {
		return unavailable(err)
	}
	return nil
}

// PollStream is RFC 8936: acknowledge acks, then return up to max held
// SETs (signed now) by jti, and whether more wait. A paused stream
// transmits nothing (SSF 1.0 §8.1.2.1).
func (s *Service) PollStream(ctx context.Context, clientID, id string, acks []string, max int) (map[string]string, bool, error) {
	st, err := s.Stream(ctx, clientID, id)
	if err != nil {
		return nil, false, err
	}
	if st.Method != storage.DeliveryPoll {
		return nil, false, fail(KindConflict, "this is a push stream")
	}
	if st.Status != storage.StreamEnabled {
		max = 0
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	held, more, err := s.store.PollSignals(ctx, st.ID, acks, min(max, MaxPollEvents))
	if err != nil {
		return nil, false, unavailable(err)
	}
	out := map[string]string{}
	ks := s.keys.KeySet()
	for _, h := range held {
		var sig storage.Signal
		if err := json.Unmarshal(h.Payload, &sig); err != nil {
			return nil, false, err
		}
		set, err := signals.Sign(ks, sig, s.cfg.Issuer)
		if err != nil {
			return nil, false, err
		}
		out[h.JTI] = set
	}
	return out, more, nil
}

// StreamAudience is the audience of a client's tokens, and whether it may
// manage streams (it has a secret).
func (s *Service) StreamAudience(clientID string) (string, bool) {
	for _, c := range s.cfg.Clients {
		if c.ID == clientID {
			return c.Audience, c.SecretEnv != ""
		}
	}
	return "", false
}
