package signals

import (
	"encoding/json"
	"fmt"

	"github.com/actas/actas/claims"
	"github.com/actas/actas/storage"
)

// Event type URIs.
const (
	SessionRevoked    = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	TokenClaimsChange = "https://schemas.openid.net/secevent/caep/event-type/token-claims-change"
	Verification      = "https://schemas.openid.net/secevent/ssf/event-type/verification"
)

// Supported are the event types a stream may request; verification events
// are always delivered (SSF 1.0 §8.1.4).
var Supported = []string{SessionRevoked, TokenClaimsChange}

var uris = map[string]string{
	storage.SignalSessionRevoked: SessionRevoked,
	storage.SignalClaimsChange:   TokenClaimsChange,
	storage.SignalVerification:   Verification,
}

// Signer signs a payload as a compact JWS of the given typ.
type Signer interface {
	SignTyped(typ string, payload []byte) (string, error)
}

// Claims is the SET of a signal, issued by issuer.
func Claims(sig storage.Signal, issuer string) (map[string]any, error) {
	uri, ok := uris[sig.Kind]
	if !ok {
		return nil, fmt.Errorf("signals: unknown kind %q", sig.Kind)
	}
	set := map[string]any{"iss": issuer, "jti": sig.JTI, "iat": sig.Time.Unix(), "aud": sig.Audience}
	if sig.Kind == storage.SignalVerification {
		set["sub_id"] = map[string]any{"format": "opaque", "id": sig.StreamID}
		ev := map[string]any{}
		if sig.State != "" {
			ev["state"] = sig.State
		}
		set["events"] = map[string]any{uri: ev}
		return set, nil
	}
	// The subject: the customer (iss_sub) in the session that is the
	// grant, in the tenant, acted for by the engineer.
	set["sub_id"] = map[string]any{
		"format":  "complex",
		"user":    map[string]any{"format": "iss_sub", "iss": sig.CustomerIss, "sub": sig.CustomerSub},
		"session": map[string]any{"format": "opaque", "id": sig.GrantID},
		"tenant":  map[string]any{"format": "opaque", "id": sig.Tenant},
		"actor":   map[string]any{"format": "iss_sub", "iss": sig.EngineerIss, "sub": sig.EngineerSub},
	}
	ev := map[string]any{"event_timestamp": sig.Time.Unix(), "grant_id": sig.GrantID}
	if sig.Initiator != "" {
		ev["initiating_entity"] = sig.Initiator
	}
	if sig.Reason != "" {
		ev["reason_admin"] = map[string]string{"en": sig.Reason}
	}
	if sig.TokenJTI != "" {
		ev["token_jti"] = sig.TokenJTI // one access token ended, not the grant
	}
	if sig.Kind == storage.SignalClaimsChange {
		ev["claims"] = sig.Claims
	}
	set["events"] = map[string]any{uri: ev}
	return set, nil
}

// Sign makes the signed SET of a signal.
func Sign(s Signer, sig storage.Signal, issuer string) (string, error) {
	c, err := Claims(sig, issuer)
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	return s.SignTyped(claims.SETType, payload)
}

// Short maps an event type URI to the stored kind; "" if unsupported.
func Short(uri string) string {
	for k, u := range uris {
		if u == uri && k != storage.SignalVerification {
			return k
		}
	}
	return ""
}
