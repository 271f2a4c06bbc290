package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/actas/actas/storage"
)

// LogoutTokenType is the JWS typ of logout tokens (OIDC Back-Channel
// Logout 1.0 §2.4, RFC 8725 §3.11).
const LogoutTokenType = "logout+jwt"

// backchannelLogoutEvent is the event member of every logout token (§2.4).
const backchannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// logoutTTL bounds a logout token's life: long enough for clock skew, short
// enough that a captured one is soon useless.
const logoutTTL = 2 * time.Minute

// logoutClaims are the claims of a logout token for l, signed at t.
func logoutClaims(l storage.Logout, issuer string, t time.Time) map[string]any {
	c := map[string]any{
		"iss": issuer, "aud": l.ClientID, "iat": t.Unix(), "exp": t.Add(logoutTTL).Unix(), "jti": l.JTI,
		"sub":    l.Sub,
		"events": map[string]any{backchannelLogoutEvent: map[string]any{}},
	}
	if l.SID != "" {
		c["sid"] = l.SID
	}
	return c
}

// sendLogout delivers one logout token (OIDC Back-Channel Logout 1.0
// §2.5): a form POST of logout_token to the client's
// backchannel_logout_uri, signed now with the key in force under the jti
// fixed when the cause happened. Only 200 and 204 count as delivered.
func (w *Worker) sendLogout(ctx context.Context, m storage.OutboxMessage) error {
	if w.keys == nil {
		return errors.New("back-channel logout is not wired to the outbox")
	}
	var l storage.Logout
	if err := json.Unmarshal(m.Payload, &l); err != nil {
		return fmt.Errorf("corrupt logout payload: %w", err)
	}
	uri := w.logoutURIs[l.ClientID]
	if uri == "" {
		w.log.Info("logout: client no longer takes back-channel logout; dropped", "client_id", l.ClientID, "jti", l.JTI)
		return nil
	}
	payload, err := json.Marshal(logoutClaims(l, w.issuer, w.now()))
	if err != nil {
		return err
	}
	tok, err := w.keys().SignTyped(LogoutTokenType, payload)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, uri, strings.NewReader(url.Values{"logout_token": {tok}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := w.hooks.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("client answered %s", resp.Status)
	}
	return nil
}
