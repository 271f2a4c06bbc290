package ssf

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/actas/actas/broker/api"
	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/broker/httpx"
	"github.com/actas/actas/broker/signals"
	"github.com/actas/actas/storage"
)

// Handler serves the transmitter.
type Handler struct {
	core *core.Service
	log  *slog.Logger
	// longPoll bounds how long a poll without returnImmediately waits.
	longPoll time.Duration
}

// New builds the surface.
func New(svc *core.Service, log *slog.Logger) *Handler {
	return &Handler{core: svc, log: log, longPoll: 5 * time.Second}
}

// Mount adds the SSF routes to r.
func (h *Handler) Mount(r *mux.Router) {
	r.HandleFunc("/.well-known/ssf-configuration", h.configuration).Methods(http.MethodGet)
	r.HandleFunc("/ssf/streams", h.authed(h.streams)).Methods(http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodPut, http.MethodDelete)
	r.HandleFunc("/ssf/streams/status", h.authed(h.status)).Methods(http.MethodGet, http.MethodPost)
	r.HandleFunc("/ssf/streams/verify", h.authed(h.verify)).Methods(http.MethodPost)
	r.HandleFunc("/ssf/poll/{stream}", h.authed(h.poll)).Methods(http.MethodPost)
}

// configuration is SSF 1.0 §7.1 transmitter metadata.
func (h *Handler) configuration(w http.ResponseWriter, _ *http.Request) {
	iss := h.core.Issuer()
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"spec_version":               "1_0",
		"issuer":                     iss,
		"jwks_uri":                   iss + "/jwks",
		"delivery_methods_supported": []string{storage.DeliveryPush, storage.DeliveryPoll},
		"configuration_endpoint":     iss + "/ssf/streams",
		"status_endpoint":            iss + "/ssf/streams/status",
		"verification_endpoint":      iss + "/ssf/streams/verify",
		"authorization_schemes":      []map[string]string{{"spec_urn": "urn:ietf:rfc:6749"}},
		"default_subjects":           "ALL",
	})
}

type client struct{ id, audience string }

// authed authenticates the client's bearer (RFC 6750): a product's own
// token from client_credentials with scope ssf.
func (h *Handler) authed(next func(http.ResponseWriter, *http.Request, client) (int, any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		id, ok := "", false
		if strings.EqualFold(scheme, "Bearer") {
			id, ok = h.core.BearerClient(tok)
		}
		aud, confidential := h.core.StreamAudience(id)
		if !ok || !confidential {
			api.WriteError(w, http.StatusUnauthorized, "invalid_token",
				"send Authorization: Bearer with a token from client_credentials (scope ssf) at /token", "")
			return
		}
		status, body, err := next(w, r, client{id: id, audience: aud})
		switch {
		case err != nil:
			api.Fail(w, r, h.log, err)
		case body == nil:
			w.WriteHeader(status)
		default:
			w.Header().Set("Cache-Control", "no-store")
			httpx.WriteJSON(w, status, body)
		}
	}
}

// delivery is a stream's delivery member.
type delivery struct {
	Method              string `json:"method"`
	EndpointURL         string `json:"endpoint_url,omitempty"`
	AuthorizationHeader string `json:"authorization_header,omitempty"`
}

// streamBody is a stream configuration as receivers send it; the
// transmitter-supplied members are accepted (a PUT echoes them) and
// ignored.
type streamBody struct {
	StreamID        *string   `json:"stream_id"`
	Iss             *string   `json:"iss"`
	Aud             any       `json:"aud"`
	Delivery        *delivery `json:"delivery"`
	EventsSupported []string  `json:"events_supported"`
	EventsRequested *[]string `json:"events_requested"`
	EventsDelivered []string  `json:"events_delivered"`
	Description     *string   `json:"description"`
	MinVerification *int      `json:"min_verification_interval"`
}

// view is a stream as the transmitter shows it (SSF 1.0 §8.1.1); the
// authorization header is write-only.
func (h *Handler) view(st storage.Stream) map[string]any {
	return map[string]any{
		"stream_id": st.ID, "iss": h.core.Issuer(), "aud": st.Audience,
		"delivery":         delivery{Method: st.Method, EndpointURL: st.EndpointURL},
		"events_supported": signals.Supported, "events_requested": st.EventsRequested,
		"events_delivered": core.Delivered(st.EventsRequested), "description": st.Description,
	}
}

func (h *Handler) streams(w http.ResponseWriter, r *http.Request, c client) (int, any, error) {
	ctx := r.Context()
	id := r.URL.Query().Get("stream_id")
	switch r.Method {
	case http.MethodGet:
		if id != "" {
			st, err := h.core.Stream(ctx, c.id, id)
			if err != nil {
				return 0, nil, err
			}
			return http.StatusOK, h.view(st), nil
		}
		all, err := h.core.Streams(ctx, c.id)
		if err != nil {
			return 0, nil, err
		}
		out := make([]map[string]any, len(all))
		for i, st := range all {
			out[i] = h.view(st)
		}
		return http.StatusOK, out, nil
	case http.MethodDelete:
		if id == "" {
			return 0, nil, httpx.Bad("invalid_request", "stream_id is required")
		}
		return http.StatusNoContent, nil, h.core.DeleteStream(ctx, c.id, id)
	}
	var b streamBody
	if be := httpx.DecodeJSON(r, &b); be != nil {
		return 0, nil, be
	}
	if r.Method == http.MethodPost {
		if b.Delivery == nil {
			return 0, nil, httpx.Bad("invalid_request", "delivery is required")
		}
		cfg := core.StreamConfig{Method: b.Delivery.Method, EndpointURL: b.Delivery.EndpointURL,
			AuthorizationHeader: b.Delivery.AuthorizationHeader}
		if b.EventsRequested != nil {
			cfg.EventsRequested = *b.EventsRequested
		}
		if b.Description != nil {
			cfg.Description = *b.Description
		}
		st, err := h.core.CreateStream(ctx, c.id, c.audience, cfg)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, h.view(st), nil
	}
	// PATCH changes the members sent; PUT replaces the receiver-supplied ones.
	if b.StreamID == nil || *b.StreamID == "" {
		return 0, nil, httpx.Bad("invalid_request", "stream_id is required")
	}
	put := r.Method == http.MethodPut
	st, err := h.core.UpdateStream(ctx, c.id, *b.StreamID, func(st *storage.Stream) error {
		if b.Delivery != nil {
			st.Method = b.Delivery.Method
			if st.Method == storage.DeliveryPush {
				st.EndpointURL, st.AuthorizationHeader = b.Delivery.EndpointURL, b.Delivery.AuthorizationHeader
			}
		} else if put {
			return httpx.Bad("invalid_request", "PUT replaces the stream: delivery is required")
		}
		switch {
		case b.EventsRequested != nil:
			st.EventsRequested = *b.EventsRequested
		case put:
			st.EventsRequested = []string{}
		}
		switch {
		case b.Description != nil:
			st.Description = *b.Description
		case put:
			st.Description = ""
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, h.view(st), nil
}

type statusBody struct {
	StreamID string `json:"stream_id"`
	Status   string `json:"status"`
	Reason   string `json:"reason"`
}

// status reads or sets a stream's status (SSF 1.0 §8.1.2).
func (h *Handler) status(w http.ResponseWriter, r *http.Request, c client) (int, any, error) {
	if r.Method == http.MethodGet {
		st, err := h.core.Stream(r.Context(), c.id, r.URL.Query().Get("stream_id"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, statusBody{StreamID: st.ID, Status: st.Status, Reason: st.Reason}, nil
	}
	var b statusBody
	if be := httpx.DecodeJSON(r, &b); be != nil {
		return 0, nil, be
	}
	st, err := h.core.UpdateStream(r.Context(), c.id, b.StreamID, func(st *storage.Stream) error {
		st.Status, st.Reason = b.Status, b.Reason
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, statusBody{StreamID: st.ID, Status: st.Status, Reason: st.Reason}, nil
}

// verify asks for a verification event (SSF 1.0 §8.1.4): 204, and the
// event follows on the stream.
func (h *Handler) verify(w http.ResponseWriter, r *http.Request, c client) (int, any, error) {
	var b struct {
		StreamID string `json:"stream_id"`
		State    string `json:"state"`
	}
	if be := httpx.DecodeJSON(r, &b); be != nil {
		return 0, nil, be
	}
	return http.StatusNoContent, nil, h.core.VerifyStream(r.Context(), c.id, b.StreamID, b.State)
}

// poll is RFC 8936 §2.4: acknowledge, then return held SETs.
func (h *Handler) poll(w http.ResponseWriter, r *http.Request, c client) (int, any, error) {
	var b struct {
		MaxEvents         *int                      `json:"maxEvents"`
		ReturnImmediately bool                      `json:"returnImmediately"`
		Ack               []string                  `json:"ack"`
		SetErrs           map[string]map[string]any `json:"setErrs"`
	}
	if be := httpx.DecodeJSON(r, &b); be != nil {
		return 0, nil, be
	}
	max := core.MaxPollEvents
	if b.MaxEvents != nil {
		if *b.MaxEvents < 0 {
			return 0, nil, httpx.Bad("invalid_request", "maxEvents must not be negative")
		}
		max = *b.MaxEvents
	}
	acks := b.Ack
	for jti, e := range b.SetErrs {
		// The receiver refused it; it will not be sent again.
		h.log.WarnContext(r.Context(), "ssf: receiver reported a SET error", "jti", jti, "error", e)
		acks = append(acks, jti)
	}
	if len(acks) > 1000 {
		return 0, nil, httpx.Bad("invalid_request", "at most 1000 acknowledgements per request")
	}
	id := mux.Vars(r)["stream"]
	deadline := time.Now().Add(h.longPoll)
	for {
		sets, more, err := h.core.PollStream(r.Context(), c.id, id, acks, max)
		if err != nil {
			return 0, nil, err
		}
		acks = nil
		if len(sets) > 0 || b.ReturnImmediately || max == 0 || !time.Now().Before(deadline) {
			return http.StatusOK, map[string]any{"sets": sets, "moreAvailable": more}, nil
		}
		if !sleep(r.Context(), 200*time.Millisecond) {
			return http.StatusOK, map[string]any{"sets": sets, "moreAvailable": more}, nil
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
