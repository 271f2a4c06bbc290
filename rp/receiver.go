package rp

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Event type URIs actas sends (CAEP 1.0, SSF 1.0).
const (
	EventSessionRevoked    = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	EventTokenClaimsChange = "https://schemas.openid.net/secevent/caep/event-type/token-claims-change"
	EventVerification      = "https://schemas.openid.net/secevent/ssf/event-type/verification"
	DeliveryPush           = "urn:ietf:rfc:8935"
)

// Receiver is the RFC 8935 push endpoint for actas's Shared Signals: each
// SET is verified (actas's keys, typ secevent+jwt, iss, aud) and applied
// once; from then on the middleware refuses the ended grant's tokens.
func (v *Verifier) Receiver() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			setError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST")
			return
		}
		if want := v.cfg.ReceiverAuthorization; want != "" &&
			subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) != 1 {
			setError(w, http.StatusUnauthorized, "authentication_failed", "missing or wrong Authorization")
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/secevent+jwt" {
			setError(w, http.StatusBadRequest, "invalid_request", "Content-Type must be application/secevent+jwt")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
		if err != nil || len(body) > 64<<10 {
			setError(w, http.StatusBadRequest, "invalid_request", "unreadable or larger than 64 KiB")
			return
		}
		if code, err := v.ApplySET(r.Context(), strings.TrimSpace(string(body))); err != nil {
			setError(w, http.StatusBadRequest, code, err.Error())
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
}

// setError is RFC 8935 §2.3's error body.
func setError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"err": code, "description": desc})
}

type setClaims struct {
	Iss    string                     `json:"iss"`
	Aud    audience                   `json:"aud"`
	Jti    string                     `json:"jti"`
	Iat    int64                      `json:"iat"`
	SubID  json.RawMessage            `json:"sub_id"`
	Events map[string]json.RawMessage `json:"events"`
}

type grantEvent struct {
	Timestamp int64  `json:"event_timestamp"`
	GrantID   string `json:"grant_id"`
	TokenJTI  string `json:"token_jti"`
	State     string `json:"state"`
}

// ApplySET verifies one SET and applies it; a SET seen before is accepted
// and changes nothing. The error code is RFC 8935's ("invalid_key",
// "invalid_issuer", "invalid_audience", "invalid_request").
func (v *Verifier) ApplySET(ctx context.Context, set string) (string, error) {
	payload, err := v.verifyJWS(ctx, set, func(typ string) bool {
		return strings.EqualFold(typ, "secevent+jwt") || strings.EqualFold(typ, "application/secevent+jwt")
	})
	if err != nil {
		return "invalid_key", err
	}
	var c setClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return "invalid_request", errors.New("the SET's claims are not valid JSON")
	}
	switch {
	case c.Iss != v.cfg.Issuer:
		return "invalid_issuer", errors.New("the SET is not from this actas")
	case !slices.Contains(c.Aud, v.cfg.Audience):
		return "invalid_audience", errors.New("the SET is for another audience")
	case c.Jti == "" || len(c.Events) == 0:
		return "invalid_request", errors.New("jti and events are required")
	}
	if !v.setsSeen.add(c.Jti, struct{}{}, v.now().Add(revocationTTL)) {
		return "", nil // a retry of a delivered event
	}
	for uri, raw := range c.Events {
		var ev grantEvent
		json.Unmarshal(raw, &ev)
		exp := v.now().Add(revocationTTL)
		switch uri {
		case EventSessionRevoked:
			switch {
			case ev.TokenJTI != "":
				v.revoked.tokens.put(ev.TokenJTI, struct{}{}, exp)
			case ev.GrantID != "":
				v.revoked.grants.put(ev.GrantID, struct{}{}, exp)
			}
		case EventTokenClaimsChange:
			if ev.GrantID != "" {
				v.revoked.changed.put(ev.GrantID, time.Unix(ev.Timestamp, 0), exp)
			}
		case EventVerification:
			v.verifyMu.Lock()
			v.lastVerify = ev.State
			v.verifyMu.Unlock()
		}
	}
	return "", nil
}

// LastVerification is the state of the last verification event received.
func (v *Verifier) LastVerification() string {
	v.verifyMu.Lock()
	defer v.verifyMu.Unlock()
	return v.lastVerify
}

// RegisterPushStream makes actas push this product's events to
// endpointURL: it gets a bearer with the client's credentials
// (client_credentials, scope ssf) and reuses its push stream to the same
// URL if there is one (a restarted product must not pile streams up, and
// gets what was held for it while it was away), else creates one for
// session-revoked and token-claims-change. It returns the stream's id.
func RegisterPushStream(ctx context.Context, v *Verifier, clientID, clientSecret, endpointURL string) (string, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"ssf"}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, v.tokenURI, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := v.call(req, http.StatusOK, &tok); err != nil {
		return "", fmt.Errorf("rp: client_credentials: %w", err)
	}
	bearer := "Bearer " + tok.AccessToken
	streamsURL := v.cfg.Issuer + "/ssf/streams"
	list, _ := http.NewRequestWithContext(ctx, http.MethodGet, streamsURL, nil)
	list.Header.Set("Authorization", bearer)
	var streams []struct {
		ID       string `json:"stream_id"`
		Delivery struct {
			Method      string `json:"method"`
			EndpointURL string `json:"endpoint_url"`
		} `json:"delivery"`
	}
	if err := v.call(list, http.StatusOK, &streams); err != nil {
		return "", fmt.Errorf("rp: listing streams: %w", err)
	}
	for _, st := range streams {
		if st.Delivery.Method == DeliveryPush && st.Delivery.EndpointURL == endpointURL {
			return st.ID, nil // events held while this receiver was away arrive on it
		}
	}
	d := map[string]any{"method": DeliveryPush, "endpoint_url": endpointURL}
	if v.cfg.ReceiverAuthorization != "" {
		d["authorization_header"] = v.cfg.ReceiverAuthorization
	}
	body, _ := json.Marshal(map[string]any{"delivery": d, "events_requested": []string{EventSessionRevoked, EventTokenClaimsChange},
		"description": "rp push receiver"})
	create, _ := http.NewRequestWithContext(ctx, http.MethodPost, streamsURL, strings.NewReader(string(body)))
	create.Header.Set("Authorization", bearer)
	create.Header.Set("Content-Type", "application/json")
	var st struct {
		ID string `json:"stream_id"`
	}
	if err := v.call(create, http.StatusCreated, &st); err != nil {
		return "", fmt.Errorf("rp: creating the stream: %w", err)
	}
	return st.ID, nil
}

func (v *Verifier) call(req *http.Request, want int, out any) error {
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s %s", req.Method, req.URL.Path, resp.Status, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}
